//! The kernel's reactions to writes and module loads, measured on Linux 6.1
//! (`docs/kernel-sysfs-semantics.md`, "What a simulator must do", rules 1–36).
//!
//! A write arrives with the path the caller used; it is resolved to its canonical path
//! (`/sys/bus/pci/devices/X/driver/unbind` becomes `/sys/bus/pci/drivers/NAME/unbind`) and
//! dispatched by shape to a reaction in one of the submodules:
//!
//! | canonical path | module |
//! | --- | --- |
//! | `…/ADDR/{driver_override,enable,reset,reset_method}`, `/sys/bus/pci/drivers_probe`, `/sys/bus/pci/drivers/X/{bind,unbind,new_id,remove_id}` | [`pci`] |
//! | `…/mdev_supported_types/T/create`, `…/UUID/remove` | [`mdev`] |
//! | `…/ADDR/sriov_numvfs`, `sriov_drivers_autoprobe` | [`sriov`] |
//! | `…/ADDR/nvidia/current_vgpu_type` | [`nvidia`] |
//! | `/sys/devices/system/node/nodeN/hugepages/hugepages-SkB/nr_hugepages`, `/sys/kernel/mm/hugepages/hugepages-SkB/nr_hugepages` | [`numa`] |
//! | module loads | [`modules`] |
//!
//! Write-only attributes (`bind`, `unbind`, `new_id`, `remove_id`, `drivers_probe`, `reset`,
//! `create`, `remove`) are not in recorded trees (recorders copy what they can read); the
//! simulator knows when the kernel would have them and answers `kind` for them as files,
//! without listing them, so that snapshots stay comparable with recordings.
//!
//! # For the VFIO model
//!
//! `group_members` and `group_viable` (rule 23; also as `SimHost` methods) read the tree;
//! [`State::open_device_fd`] / [`State::close_device_fd`] mark a device fd (rules 17, 24, 25,
//! 34) and [`State::set_group_claimed`] a group attached to a container (rules 24, 34);
//! [`is_vfio_driver`] says which drivers expose `/dev/vfio/N`; faults for VFIO calls go through
//! `st.faults.check("vfio:NAME", path)` and `st.faults.finish(..)` like the sysfs calls.
//!
//! # Where the simulator knowingly differs from the kernel
//!
//! - **Blocking writes** (rule 25). Unbinding a device, or removing an mdev, whose VFIO device
//!   fd is open blocks the kernel's `write` until the fd closes. The simulator has one thread,
//!   so the write returns at once with `ETIMEDOUT` ([`faults::is_hang`](crate::faults::is_hang)
//!   is true, as for an injected hang), nothing changes yet, and the write is kept as a
//!   [`PendingWrite`]; it completes when the last fd of that device closes
//!   ([`State::close_device_fd`], or the process dying: [`SimHost::fork`](crate::SimHost::fork)),
//!   which is what the kernel's blocked writer would then see. No `EBUSY` is involved.
//! - **`/sys/class/vfio/N`** is a link to `/sys/devices/virtual/vfio/N`, whose `dev` reads
//!   `246:MINOR`: the major is the lab's (dynamic on a real kernel); minors are lowest-free.
//!   The lab's recorder copies neither, so recordings lack them.
//! - **Write-only attributes** exist for writes, `kind` and reads (`EACCES`, as the kernel),
//!   but are not listed by `list_dir` or snapshots.
//! - **Id tables** are approximated: a driver matches the `vendor:device` ids it was bound to
//!   when the fixture was opened, plus its `new_id` entries; VFIO drivers and `pci-stub`
//!   match only through `driver_override` or `new_id`. Class or subsystem matches are not
//!   modelled. Probe order without override: the device's native driver, then other drivers
//!   whose learned table matches, then `new_id` matches (the kernel: registration order).
//! - **`enable`** goes up by one when a non-VFIO driver binds and down when it unbinds, and
//!   follows VFIO device fds; drivers that never enable their device are not modelled.
//! - **DRM nodes** come back only when the device's native driver rebinds: each card under
//!   the lowest free `cardN` (rule 36), render nodes from `renderD128` up, connectors keeping
//!   their recorded suffix (`Virtual-1`) where the kernel numbers connectors afresh.
//! - **mdev directories** hold `driver`, `iommu_group`, `mdev_type`, `subsystem` like the
//!   recording; the kernel's `power/`, `uevent`, `vendor` and `vfio-dev/` are not created.
//! - **Modules**: `/proc/modules` use counts are not maintained (a new line reads
//!   `NAME 16384 0 - Live 0x0000000000000000`); "in use" comes from the users column, device
//!   fds and claimed groups; unloading `vfio_pci` leaves `vfio_pci_core` loaded.
//! - **Kernel log**: only the messages the rules quote are kept
//!   ([`SimHost::dmesg`](crate::SimHost::dmesg)).
//! - **SR-IOV and NVIDIA vendor-VFIO** were not measured: see [`sriov`] and [`nvidia`] for the
//!   choices made.

pub mod mdev;
pub mod modules;
pub mod numa;
pub mod nvidia;
pub mod pci;
pub mod sriov;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use vm_device_host::{HostError, NodeKind};

use crate::tree::{Entry, Tree};
use crate::State;

/// The errno values the simulator answers with (Linux x86-64 numbering).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Resource temporarily unavailable.
    pub const EAGAIN: i32 = 11;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Inappropriate ioctl for device.
    pub const ENOTTY: i32 = 25;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Numerical result out of range.
    pub const ERANGE: i32 = 34;
    /// Too many levels of symbolic links.
    pub const ELOOP: i32 = 40;
    /// Too many users.
    pub const EUSERS: i32 = 87;
    /// Connection timed out: the simulator's "this call hung" (a fault, or a write the kernel
    /// blocks until a VFIO device fd is closed).
    pub const ETIMEDOUT: i32 = 110;
}

pub(crate) fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Major number of `/dev/vfio/N` group nodes (dynamic on a real kernel; 246 in the lab).
pub const VFIO_GROUP_MAJOR: u32 = 246;

/// A write the kernel holds until a VFIO device fd is closed (rule 25).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingWrite {
    /// `unbind` of a PCI device (by address) whose device fd is open.
    Unbind(String),
    /// `remove` of an mdev (by UUID) whose device fd is open.
    MdevRemove(String),
}

/// DRM nodes a device had when the host was opened, kept so that a native rebind recreates
/// them (under the lowest free minor, rule 36).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NativeDrm {
    /// Connector suffixes of each card (`Virtual-1` for `card0-Virtual-1`), one entry per card.
    pub(crate) cards: Vec<Vec<String>>,
    /// Number of render nodes (`renderD128`…).
    pub(crate) renders: usize,
}

/// Everything the simulated kernel remembers beyond the tree itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelState {
    /// Driver each PCI function had when the host was opened (its "native" driver).
    pub(crate) native: BTreeMap<String, Option<String>>,
    /// `vendor:device` ids each driver was seen bound to at open: a stand-in for the
    /// drivers' id tables (VFIO drivers and pci-stub excluded: they match only through
    /// `driver_override` or `new_id`).
    pub(crate) id_table: BTreeMap<String, BTreeSet<(u16, u16)>>,
    /// `new_id` entries per driver.
    pub(crate) dyn_ids: BTreeMap<String, BTreeSet<(u16, u16)>>,
    /// DRM nodes per device at open.
    pub(crate) drm: BTreeMap<String, NativeDrm>,
    /// The probed `reset_method` list per device (what `default` restores).
    pub(crate) reset_default: BTreeMap<String, String>,
    /// Minor number of each `/dev/vfio/N` that exists.
    pub(crate) vfio_minors: BTreeMap<u32, u32>,
    /// Open VFIO device fds: group → device name (address or UUID) → count.
    pub(crate) device_fds: BTreeMap<u32, BTreeMap<String, u32>>,
    /// Groups whose DMA ownership userspace has claimed (attached to a container).
    pub(crate) claimed: BTreeSet<u32>,
    /// Writes blocked on an open device fd, completed when it closes.
    pub(crate) pending: Vec<PendingWrite>,
    /// mdev capacity pools per parent device directory.
    pub(crate) pools: BTreeMap<PathBuf, mdev::Pool>,
    /// Modules `modprobe` can load besides those already loaded.
    pub(crate) modules_available: BTreeSet<String>,
    /// NVIDIA vendor-VFIO state per physical function directory.
    pub(crate) nvidia: BTreeMap<PathBuf, nvidia::NvPf>,
    /// mdev parents whose module was unloaded, by module name.
    pub(crate) unloaded_parents: BTreeMap<String, UnloadedParent>,
    /// Kernel log lines the reactions printed (`dmesg`), oldest first.
    pub(crate) dmesg: Vec<String>,
    /// CPU affinity each thread was given with `sched_setaffinity` (thread id → CPUs).
    pub(crate) affinity: BTreeMap<u32, Vec<u32>>,
    /// Most pages each hugepage pool can reach (`.fixture/hugepages.json`): a pool grows
    /// by an `nr_hugepages` write only this far, as fragmented memory limits the kernel.
    pub(crate) hugepage_limits: BTreeMap<PathBuf, u64>,
}

/// An mdev parent whose module is unloaded, kept to bring it back on the next load.
#[derive(Debug, Clone)]
pub(crate) struct UnloadedParent {
    pub(crate) parent: PathBuf,
    pub(crate) class_links: Vec<String>,
    pub(crate) driver: String,
    pub(crate) pool: Option<mdev::Pool>,
}

impl KernelState {
    /// Records what the fixture looks like before any change: native drivers, id tables,
    /// DRM nodes, reset methods, existing `/dev/vfio/N`, loadable modules.
    pub(crate) fn scan(tree: &Tree, root: &Path) -> Self {
        let mut ks = KernelState::default();
        for (addr, dir) in pci::all_devices(tree) {
            let drv = tree.link_name(&dir.join("driver"));
            if let (Some(d), Some(id)) = (&drv, pci::ids(tree, &dir)) {
                if !is_vfio_driver(d) && d != "pci-stub" {
                    ks.id_table.entry(d.clone()).or_default().insert(id);
                }
            }
            if let Some(m) = tree.text(&dir.join("reset_method")) {
                ks.reset_default.insert(addr.clone(), m);
            }
            if let Some(drm) = pci::scan_drm(tree, &dir) {
                ks.drm.insert(addr.clone(), drm);
            }
            ks.native.insert(addr, drv);
        }
        // Groups that already have a node keep minors in group order, as a boot would.
        if let Ok(nodes) = tree.list(Path::new("/dev/vfio")) {
            let mut groups: Vec<u32> = nodes.iter().filter_map(|n| n.parse().ok()).collect();
            groups.sort_unstable();
            for (minor, g) in groups.into_iter().enumerate() {
                ks.vfio_minors.insert(g, minor as u32);
            }
        }
        ks.modules_available = modules::available(tree, root);
        ks.hugepage_limits = numa::limits(root);
        ks
    }
}

/// True for drivers that expose devices through VFIO (`vfio-pci` and vendor variants such
/// as `nvgrace-gpu-vfio-pci`, `mlx5_vfio_pci`).
pub fn is_vfio_driver(name: &str) -> bool {
    name == "vfio-pci" || name.ends_with("-vfio-pci") || name.ends_with("_vfio_pci")
}

/// What a write targets, decided from its canonical path.
enum Target {
    PciAttr { dev: PathBuf, attr: String },
    DriversProbe,
    DriverAttr { driver: String, attr: String },
    MdevCreate { type_dir: PathBuf },
    MdevRemove { dev: PathBuf },
    NvidiaVgpuType { dev: PathBuf },
    HugePages { pool: PathBuf },
}

const PCI_WRITABLE: &[&str] = &[
    "driver_override",
    "enable",
    "reset",
    "reset_method",
    "sriov_numvfs",
    "sriov_drivers_autoprobe",
];

const DRIVER_WRITABLE: &[&str] = &["bind", "unbind", "new_id", "remove_id"];

fn classify(tree: &Tree, p: &Path) -> Option<Target> {
    let name = p.file_name()?.to_string_lossy().into_owned();
    let parent = p.parent()?;
    if p == Path::new("/sys/bus/pci/drivers_probe") {
        return Some(Target::DriversProbe);
    }
    if parent.parent() == Some(Path::new("/sys/bus/pci/drivers"))
        && DRIVER_WRITABLE.contains(&name.as_str())
    {
        let driver = parent.file_name()?.to_string_lossy().into_owned();
        return Some(Target::DriverAttr { driver, attr: name });
    }
    if PCI_WRITABLE.contains(&name.as_str()) && pci::is_device_dir(tree, parent) {
        return Some(Target::PciAttr {
            dev: parent.to_path_buf(),
            attr: name,
        });
    }
    if name == "create" && parent.parent()?.file_name()? == "mdev_supported_types" {
        return Some(Target::MdevCreate {
            type_dir: parent.to_path_buf(),
        });
    }
    if name == "remove" && mdev::is_mdev_dir(tree, parent) {
        return Some(Target::MdevRemove {
            dev: parent.to_path_buf(),
        });
    }
    if name == "nr_hugepages" && numa::is_pool(parent) {
        return Some(Target::HugePages {
            pool: parent.to_path_buf(),
        });
    }
    if name == "current_vgpu_type"
        && parent.file_name()? == "nvidia"
        && pci::is_device_dir(tree, parent.parent()?)
    {
        return Some(Target::NvidiaVgpuType {
            dev: parent.parent()?.to_path_buf(),
        });
    }
    None
}

/// True when the kernel would have the write-only attribute `p` (canonical) although the
/// recorded tree cannot hold it.
fn write_only_exists(tree: &Tree, p: &Path) -> bool {
    let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let Some(parent) = p.parent() else {
        return false;
    };
    let dir = |q: &Path| matches!(tree.node(q), Some(Entry::Dir { .. }));
    match name.as_str() {
        "drivers_probe" => parent == Path::new("/sys/bus/pci") && dir(parent),
        "bind" | "unbind" | "new_id" | "remove_id" => {
            parent.parent() == Some(Path::new("/sys/bus/pci/drivers")) && dir(parent)
        }
        // `reset` exists exactly when `reset_method` does (rule 3).
        "reset" => pci::is_device_dir(tree, parent) && tree.has(&parent.join("reset_method")),
        "create" => {
            dir(parent)
                && parent
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == "mdev_supported_types")
        }
        "remove" => mdev::is_mdev_dir(tree, parent),
        _ => false,
    }
}

/// [`HostOps::kind`](vm_device_host::HostOps::kind) with the kernel's write-only attributes.
pub(crate) fn kind(tree: &Tree, path: &Path) -> Option<NodeKind> {
    if let Some(k) = tree.kind(path) {
        return Some(k);
    }
    let p = tree.resolve(path, false).ok()?;
    write_only_exists(tree, &p).then_some(NodeKind::File)
}

/// The error of reading `path`: a write-only attribute the kernel has cannot be opened for
/// reading (`EACCES`); anything else keeps the tree's error.
pub(crate) fn read_error(tree: &Tree, path: &Path, e: io::Error) -> io::Error {
    let write_only = e.raw_os_error() == Some(errno::ENOENT)
        && tree
            .resolve(path, true)
            .is_ok_and(|p| write_only_exists(tree, &p));
    if write_only {
        err(errno::EACCES)
    } else {
        e
    }
}

/// Applies one `write(2)` of `value` to `path`.
pub(crate) fn write(st: &mut State, path: &Path, value: &[u8]) -> io::Result<()> {
    let p = st.tree.resolve(path, true)?;
    let exists = match st.tree.node(&p) {
        Some(Entry::Dir { .. }) => return Err(err(errno::EISDIR)),
        Some(_) => true,
        None => write_only_exists(&st.tree, &p),
    };
    // Rule 3: the attribute is not there: `open` fails.
    if !exists {
        return Err(err(errno::ENOENT));
    }
    // Rule 2: `open(O_WRONLY)` of a read-only attribute fails before any byte is written.
    let Some(target) = classify(&st.tree, &p) else {
        return Err(err(errno::EACCES));
    };
    // Rule 1: a 0-byte write never reaches the store method.
    if value.is_empty() {
        return Ok(());
    }
    match target {
        Target::PciAttr { dev, attr } => match attr.as_str() {
            "driver_override" => pci::store_override(st, &dev, value),
            "enable" => pci::store_enable(st, &dev, value),
            "reset" => pci::store_reset(st, &dev, value),
            "reset_method" => pci::store_reset_method(st, &dev, value),
            "sriov_numvfs" => sriov::store_numvfs(st, &dev, value),
            _ => sriov::store_autoprobe(st, &dev, value),
        },
        Target::DriversProbe => pci::drivers_probe(st, value),
        Target::DriverAttr { driver, attr } => match attr.as_str() {
            "bind" => pci::driver_bind(st, &driver, value),
            "unbind" => pci::driver_unbind(st, &driver, value),
            "new_id" => pci::new_id(st, &driver, value),
            _ => pci::remove_id(st, &driver, value),
        },
        Target::MdevCreate { type_dir } => mdev::create(st, &type_dir, value),
        Target::MdevRemove { dev } => mdev::store_remove(st, &dev, value),
        Target::NvidiaVgpuType { dev } => nvidia::store_current_type(st, &dev, value),
        Target::HugePages { pool } => numa::store_nr(st, &pool, value),
    }
}

/// `modprobe NAME`.
pub(crate) fn load_module(st: &mut State, name: &str) -> Result<(), HostError> {
    modules::load(st, name)
}

/// The value a store method sees: the bytes with one trailing newline removed (rule 4).
pub(crate) fn strip_newline(value: &[u8]) -> &[u8] {
    value.strip_suffix(b"\n").unwrap_or(value)
}

/// The value as trimmed text, for stores that parse numbers or names.
pub(crate) fn text_value(value: &[u8]) -> String {
    String::from_utf8_lossy(strip_newline(value))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// IOMMU groups and /dev/vfio (rules 20–25), shared with the VFIO model.

/// The IOMMU group of the device at canonical `dev`.
pub(crate) fn group_of(tree: &Tree, dev: &Path) -> Option<u32> {
    tree.link_name(&dev.join("iommu_group"))?.parse().ok()
}

/// Members of IOMMU group `group`: each member's canonical device directory (its last
/// component is the PCI address or mdev UUID) and the name of its bound driver.
pub(crate) fn group_members(tree: &Tree, group: u32) -> Vec<(PathBuf, Option<String>)> {
    let devs = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
    let Ok(names) = tree.list(&devs) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter_map(|n| tree.resolve(&devs.join(n), true).ok())
        .map(|dev| {
            let drv = tree.link_name(&dev.join("driver"));
            (dev, drv)
        })
        .collect()
}

/// Rule 23: a group is viable (`VFIO_GROUP_GET_STATUS` flag `VIABLE`) when every member is
/// unbound, on a VFIO driver, on `pci-stub` or `pcieport` (drivers that leave DMA to their
/// user), an mdev (on its parent's mdev driver), or a PCI bridge (class `0x0604xx`).
pub(crate) fn group_viable(tree: &Tree, group: u32) -> bool {
    group_members(tree, group).iter().all(|(dev, drv)| {
        let Some(d) = drv else { return true };
        is_vfio_driver(d)
            || d == "pci-stub"
            || d == "pcieport"
            || mdev::is_mdev_dir(tree, dev)
            || pci::class(tree, dev).is_some_and(|c| c >> 8 == 0x0604)
    })
}

/// True while a member of `group` is bound to a VFIO driver or is an mdev (rule 20).
fn group_has_vfio_member(tree: &Tree, group: u32) -> bool {
    group_members(tree, group).iter().any(|(dev, drv)| {
        drv.as_deref().is_some_and(is_vfio_driver) || mdev::is_mdev_dir(tree, dev)
    })
}

/// Makes `/dev/vfio/N`, `/sys/class/vfio/N` and `/sys/devices/virtual/vfio/N` exist exactly
/// while a member of the group is on a VFIO driver (rules 20, 21). A new node takes the
/// lowest free minor.
pub(crate) fn sync_vfio_node(tree: &mut Tree, ks: &mut KernelState, group: u32) {
    let want = group_has_vfio_member(tree, group);
    let node = PathBuf::from(format!("/dev/vfio/{group}"));
    let class = PathBuf::from(format!("/sys/class/vfio/{group}"));
    let virt = PathBuf::from(format!("/sys/devices/virtual/vfio/{group}"));
    let have = tree.has(&node);
    if want && !have {
        let minor = (0..)
            .find(|m| !ks.vfio_minors.values().any(|v| v == m))
            .unwrap_or(0);
        ks.vfio_minors.insert(group, minor);
        tree.put_file(&node, Vec::new());
        tree.put_file(
            &virt.join("dev"),
            format!("{VFIO_GROUP_MAJOR}:{minor}\n").into_bytes(),
        );
        tree.put_link(&class, &virt);
    } else if !want && have {
        ks.vfio_minors.remove(&group);
        tree.remove_pruned(&node);
        tree.remove_pruned(&class);
        tree.remove_pruned(&virt);
    }
}

/// The lowest IOMMU group number not in `/sys/kernel/iommu_groups` (rule 30).
pub(crate) fn lowest_free_group(tree: &Tree) -> u32 {
    let used: BTreeSet<u32> = tree
        .list(Path::new("/sys/kernel/iommu_groups"))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// True when userspace uses `group`: a device fd is open or its DMA ownership is claimed.
///
/// This and [`device_fd_open`] are the only places the sysfs rules learn about VFIO fds; a
/// VFIO model that keeps its own record of fds can answer here instead.
pub(crate) fn group_in_use(st: &State, group: u32) -> bool {
    let ks = &st.kernel;
    ks.claimed.contains(&group) || ks.device_fds.get(&group).is_some_and(|m| !m.is_empty())
}

/// True when a VFIO device fd of device `name` (address or UUID) is open.
pub(crate) fn device_fd_open(st: &State, name: &str) -> bool {
    st.kernel.device_fds.values().any(|m| m.contains_key(name))
}

impl State {
    /// Marks a VFIO device fd of `dev` (PCI address or mdev UUID) in `group` as open:
    /// rules 17 (a PCI device's `enable` goes up while it is open), 24 (the group is in use),
    /// 25 (unbind/remove of the device blocks) and 34 consult it. Call once per open fd.
    pub fn open_device_fd(&mut self, group: u32, dev: &str) {
        *self
            .kernel
            .device_fds
            .entry(group)
            .or_default()
            .entry(dev.to_string())
            .or_insert(0) += 1;
        if let Some(dir) = pci::device_dir(&self.tree, dev) {
            pci::bump_enable(&mut self.tree, &dir, 1);
        }
    }

    /// Marks one VFIO device fd of `dev` as closed; when its last fd closes, a write the
    /// kernel held for it (rule 25) completes now.
    pub fn close_device_fd(&mut self, group: u32, dev: &str) {
        let Some(m) = self.kernel.device_fds.get_mut(&group) else {
            return;
        };
        let Some(n) = m.get_mut(dev) else { return };
        *n -= 1;
        let last = *n == 0;
        if last {
            m.remove(dev);
        }
        if m.is_empty() {
            self.kernel.device_fds.remove(&group);
        }
        if let Some(dir) = pci::device_dir(&self.tree, dev) {
            pci::bump_enable(&mut self.tree, &dir, -1);
        }
        if last {
            self.complete_pending(dev);
        }
    }

    /// Marks `group`'s DMA ownership as claimed by userspace (`VFIO_GROUP_SET_CONTAINER`) or
    /// released (`VFIO_GROUP_UNSET_CONTAINER`, group fd closed): rule 24 refuses native
    /// probes on its members while claimed.
    pub fn set_group_claimed(&mut self, group: u32, claimed: bool) {
        if claimed {
            self.kernel.claimed.insert(group);
        } else {
            self.kernel.claimed.remove(&group);
        }
    }

    /// Closes every device fd and releases every group (the owning process died).
    pub(crate) fn release_all_fds(&mut self) {
        let open: Vec<(u32, String, u32)> = self
            .kernel
            .device_fds
            .iter()
            .flat_map(|(g, m)| m.iter().map(move |(d, n)| (*g, d.clone(), *n)))
            .collect();
        for (g, d, n) in open {
            for _ in 0..n {
                self.close_device_fd(g, &d);
            }
        }
        self.kernel.claimed.clear();
    }

    fn complete_pending(&mut self, dev: &str) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kernel.pending)
            .into_iter()
            .partition(|p| match p {
                PendingWrite::Unbind(a) | PendingWrite::MdevRemove(a) => a == dev,
            });
        self.kernel.pending = later;
        for p in now {
            match p {
                PendingWrite::Unbind(addr) => {
                    if let Some(dir) = pci::device_dir(&self.tree, &addr) {
                        pci::unbind(self, &dir, &addr);
                    }
                }
                PendingWrite::MdevRemove(uuid) => mdev::remove_now(self, &uuid),
            }
        }
    }
}
