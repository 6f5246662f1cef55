//! Mediated-device parents, their types and active devices; NVIDIA vendor-VFIO vGPU types.

use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::{truncate, Scan};

/// One mdev type of a parent (`mdev_supported_types/TYPE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevTypeInfo {
    /// Type id: the directory name (`i915-GVTg_V5_4`, `nvidia-222`, `mbochs-small`).
    pub id: String,
    /// `name` attribute (`GRID T4-1Q`); absent for some drivers.
    pub name: Option<String>,
    /// `description`; optional in the kernel ABI.
    pub description: Option<String>,
    /// `device_api` (`vfio-pci`).
    pub device_api: Option<String>,
    /// `available_instances`; `None` when unreadable.
    pub available_instances: Option<u32>,
    /// UUIDs of active devices of this type (`devices/`).
    pub devices: Vec<String>,
}

impl MdevTypeInfo {
    /// True when `wanted` names this type by id or by `name`, case-insensitively.
    pub fn matches(&self, wanted: &str) -> bool {
        self.id.eq_ignore_ascii_case(wanted)
            || self
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
    }

    /// `name (id)` or just the id.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if n != &self.id => format!("{} ({n})", self.id),
            _ => self.id.clone(),
        }
    }
}

/// A device that can parent mediated devices (`/sys/class/mdev_bus/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevParent {
    /// Name under `mdev_bus` (`0000:00:02.0`, `mbochs`).
    pub name: String,
    /// The PCI function, when the parent is one.
    pub pci_address: Option<PciAddress>,
    /// Canonical directory.
    pub sysfs_path: PathBuf,
    /// The parent's driver (`i915`, `nvidia`, `mbochs`).
    pub driver: Option<String>,
    /// Its types, sorted by id.
    pub types: Vec<MdevTypeInfo>,
    /// True when its mediated devices are displays, so GPU candidates: a display-class PCI
    /// function or a VF of one, or a display sample driver ([`DISPLAY_MDEV_DRIVERS`]). A
    /// serial port (`mtty`) or a network function parents mdevs too, and is never a GPU.
    pub display: bool,
}

/// GPU drivers whose PCI functions parent mediated GPUs (GVT-g, NVIDIA vGPU, AMD MxGPU).
const GPU_MDEV_DRIVERS: [&str; 4] = ["i915", "nvidia", "amdgpu", "gim"];

/// Non-PCI mdev parents whose devices are displays: the kernel's `mbochs` (a bochs-style
/// framebuffer) and `mdpy` (a simple display) samples. `mtty` (a serial port) is not one.
pub const DISPLAY_MDEV_DRIVERS: [&str; 2] = ["mbochs", "mdpy"];

impl MdevParent {
    /// Active mediated devices across all types.
    pub fn active_count(&self) -> usize {
        self.types.iter().map(|t| t.devices.len()).sum()
    }

    /// The kernel module that provides mediated devices for this parent's driver.
    pub fn vendor_module(&self) -> Option<&'static str> {
        match self.driver.as_deref()? {
            "i915" => Some("kvmgt"),
            "nvidia" => Some("nvidia_vgpu_vfio"),
            _ => None,
        }
    }
}

/// An active mediated device (`/sys/bus/mdev/devices/UUID`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevDevice {
    /// UUID.
    pub uuid: String,
    /// Parent name.
    pub parent: String,
    /// Type id.
    pub type_id: Option<String>,
    /// Its IOMMU group.
    pub iommu_group: Option<u32>,
}

/// NVIDIA vendor-VFIO vGPU state of a VF (`nvidia/creatable_vgpu_types`, `current_vgpu_type`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NvidiaVgpuTypes {
    /// Types that can be created now: `(id, name)`.
    pub creatable: Vec<(u32, String)>,
    /// The configured type (`None` when `current_vgpu_type` is 0).
    pub current: Option<u32>,
}

pub(super) fn nvidia_vgpu(scan: &mut Scan<'_>, dir: &Path) -> Option<NvidiaVgpuTypes> {
    let path = dir.join("creatable_vgpu_types");
    let text = scan.attr(&path)?;
    let mut creatable = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // Lines are `ID : NAME`; a header line (`ID    : vGPU Name`) is skipped.
        let Some((id, name)) = line.split_once(':') else {
            scan.warn(&path, format!("not `ID : NAME`: {:?}", truncate(line)));
            continue;
        };
        if let Ok(id) = id.trim().parse::<u32>() {
            creatable.push((id, name.trim().to_string()));
        }
    }
    let current = scan
        .dec::<u32>(&dir.join("current_vgpu_type"))
        .filter(|c| *c != 0);
    Some(NvidiaVgpuTypes { creatable, current })
}

/// Whether `p` parents display devices (see [`MdevParent::display`]).
pub(super) fn is_display_parent(p: &MdevParent, functions: &[super::PciFunction]) -> bool {
    let find = |a: &PciAddress| functions.iter().find(|f| f.address == *a);
    match p.pci_address {
        // A GPU driver's parent, or a function whose class could not be read, keeps the
        // benefit of the doubt (a garbage attribute must not hide a GPU); a function of a
        // known other class on another driver is not a GPU.
        Some(a) => find(&a).is_some_and(|f| {
            GPU_MDEV_DRIVERS.contains(&p.driver.as_deref().unwrap_or(""))
                || f.class.is_none()
                || f.is_display()
                || f.physfn
                    .and_then(|pf| find(&pf))
                    .is_some_and(|pf| pf.is_display())
        }),
        None => {
            // A virtual parent: /sys/devices/virtual/CLASS/NAME, named after its driver.
            let class = p
                .sysfs_path
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            [Some(p.name.clone()), p.driver.clone(), class]
                .into_iter()
                .flatten()
                .any(|n| DISPLAY_MDEV_DRIVERS.contains(&n.as_str()))
        }
    }
}

pub(super) fn scan(scan: &mut Scan<'_>) -> (Vec<MdevParent>, Vec<MdevDevice>) {
    let bus = Path::new("/sys/class/mdev_bus");
    let mut parents = Vec::new();
    for name in scan.list(bus) {
        let dir = bus.join(&name);
        let sysfs_path = match scan.host.canonicalize(&dir) {
            Ok(p) => p,
            Err(e) => {
                scan.warn(&dir, format!("parent link does not resolve: {e}"));
                continue;
            }
        };
        let driver = scan.link_name(&dir.join("driver"));
        let tdir = dir.join("mdev_supported_types");
        let mut types = Vec::new();
        for id in scan.list(&tdir) {
            types.push(mdev_type(scan, &tdir.join(&id), id));
        }
        parents.push(MdevParent {
            pci_address: name.parse().ok(),
            name,
            sysfs_path,
            driver,
            types,
            // Decided with the PCI functions (`HostInventory::scan`).
            display: false,
        });
    }
    let devs = Path::new("/sys/bus/mdev/devices");
    let mut devices = Vec::new();
    for uuid in scan.list(devs) {
        let dir = devs.join(&uuid);
        let parent = match scan.host.canonicalize(&dir) {
            Ok(p) => p
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Err(e) => {
                scan.warn(&dir, format!("mdev link does not resolve: {e}"));
                continue;
            }
        };
        let type_id = scan.link_name(&dir.join("mdev_type"));
        let iommu_group = scan
            .link_name(&dir.join("iommu_group"))
            .and_then(|g| g.parse().ok());
        devices.push(MdevDevice {
            uuid,
            parent,
            type_id,
            iommu_group,
        });
    }
    for p in &mut parents {
        let parent_dir = p
            .sysfs_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        for t in &mut p.types {
            t.devices = devices
                .iter()
                .filter(|d| {
                    Some(&d.parent) == parent_dir.as_ref()
                        && d.type_id.as_deref() == Some(t.id.as_str())
                })
                .map(|d| d.uuid.clone())
                .collect();
        }
    }
    (parents, devices)
}

fn mdev_type(scan: &mut Scan<'_>, dir: &Path, id: String) -> MdevTypeInfo {
    // Read directly (an absent optional attribute is a quiet ENOENT): a server has hundreds
    // of types, and listing each directory first doubled the work.
    let name = scan.attr(&dir.join("name"));
    let description = scan.attr(&dir.join("description"));
    let device_api = scan.attr(&dir.join("device_api"));
    let path = dir.join("available_instances");
    let available_instances = match scan.host.read_attr(&path) {
        Ok(text) => scan.dec_text::<u32>(&path, &text),
        Err(e) if e.is_not_found() => {
            scan.warn(&path, "missing");
            None
        }
        Err(e) => {
            scan.warn(&path, format!("not readable: {e}"));
            None
        }
    };
    // Filled from /sys/bus/mdev/devices (one listing for the host, not one per type).
    let devices = Vec::new();
    MdevTypeInfo {
        id,
        name,
        description,
        device_api,
        available_instances,
        devices,
    }
}
