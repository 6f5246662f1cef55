//! PCI functions from `/sys/bus/pci/devices`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vm_device_host::PciAddress;

use super::{names, parse_hex, truncate, Scan, CLASS_DISPLAY};

/// `IORESOURCE_IO` in a `resource` line's flags.
const IORESOURCE_IO: u64 = 0x100;
/// `IORESOURCE_MEM`.
const IORESOURCE_MEM: u64 = 0x200;
/// `IORESOURCE_PREFETCH`.
const IORESOURCE_PREFETCH: u64 = 0x2000;
/// `IORESOURCE_MEM_64`.
const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// One base address register (or the ROM, index 6) from the `resource` file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bar {
    /// Line index in `resource`: 0–5 BARs, 6 the expansion ROM.
    pub index: u8,
    /// Start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Memory (not I/O port) space.
    pub memory: bool,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// 64-bit memory BAR.
    pub is_64bit: bool,
}

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sriov {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// The enabled virtual functions (`virtfnN` links), in N order.
    pub vfs: Vec<PciAddress>,
}

/// Where a VRAM figure came from. Only sources that know the memory size: a BAR is an
/// address window (a 80 GB H100 has a 128 GiB one, a virtio-gpu a 16 KiB register BAR) and
/// is never reported as memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VramSource {
    /// amdgpu's `mem_info_vram_total` attribute.
    AmdgpuSysfs,
    /// Intel xe's `tileN/physical_vram_size_bytes` attributes, summed over tiles.
    XeSysfs,
    /// NVML (`nvmlDeviceGetMemoryInfo`) while the `nvidia` driver is bound.
    Nvml,
}

impl VramSource {
    /// The JSON name (`amdgpu_sysfs`, `xe_sysfs`, `nvml`).
    pub fn as_str(self) -> &'static str {
        match self {
            VramSource::AmdgpuSysfs => "amdgpu_sysfs",
            VramSource::XeSysfs => "xe_sysfs",
            VramSource::Nvml => "nvml",
        }
    }

    /// For people: where the figure was read.
    pub fn describe(self) -> &'static str {
        match self {
            VramSource::AmdgpuSysfs => "amdgpu mem_info_vram_total",
            VramSource::XeSysfs => "xe physical_vram_size_bytes",
            VramSource::Nvml => "NVML",
        }
    }
}

/// Video memory of a GPU, with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Vram {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure came from.
    pub source: VramSource,
}

/// One PCI function as sysfs describes it. Fields the kernel did not expose, or that could
/// not be parsed, are `None`. The detail fields (subsystem ids, revision, `driver_override`,
/// NUMA node, BARs, `boot_vga`, reset method, SR-IOV, VRAM) are read for display functions,
/// their companion classes and functions of unknown class; for other functions (bridges,
/// storage, network) they stay `None`: no decision needs them, and a 1,024-function host
/// scans as cheaply as `lspci` reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PciFunction {
    /// Address.
    pub address: PciAddress,
    /// Directory under `/sys/devices`.
    pub sysfs_path: PathBuf,
    /// Vendor id.
    pub vendor_id: Option<u16>,
    /// Device id.
    pub device_id: Option<u16>,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: Option<u16>,
    /// Subsystem device id.
    pub subsystem_device_id: Option<u16>,
    /// 24-bit class code (`0x030200`).
    pub class: Option<u32>,
    /// Revision.
    pub revision: Option<u8>,
    /// Vendor name from the PCI ID database.
    pub vendor_name: Option<String>,
    /// Device name from the PCI ID database.
    pub device_name: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// NUMA node, when the platform has one.
    pub numa_node: Option<u32>,
    /// BARs and ROM with non-zero size.
    pub bars: Vec<Bar>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// `boot_vga`: the firmware's boot display.
    pub boot_vga: Option<bool>,
    /// `reset_method` (`None` when the device has no reset method at all).
    pub reset_method: Option<String>,
    /// SR-IOV capability of a physical function.
    pub sriov: Option<Sriov>,
    /// The physical function of a virtual function.
    pub physfn: Option<PciAddress>,
    /// Video memory of a display function, from a source that knows it (never a BAR).
    pub vram: Option<Vram>,
    /// Why a display function has no VRAM figure (`nvidia` bound but NVML not installed, an
    /// unreadable attribute, a driver that does not report it).
    pub vram_unknown: Option<String>,
    /// Device nodes through which host processes use the function (`/dev/dri/card0`,
    /// `renderD128`, `/dev/nvidia0`); read for display functions and their companions.
    pub device_nodes: Vec<PathBuf>,
    /// NVIDIA vendor-VFIO vGPU attributes of a VF (`nvidia/…`).
    pub nvidia_vgpu: Option<super::NvidiaVgpuTypes>,
}

impl PciFunction {
    /// Display controller (class `0x03xxxx`).
    pub fn is_display(&self) -> bool {
        self.class.is_some_and(|c| c >> 16 == CLASS_DISPLAY)
    }

    /// Human name: `vendor device` from the database, or the ids.
    pub fn display_name(&self) -> String {
        match (&self.vendor_name, &self.device_name) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} device {}", hex4(self.device_id)),
            _ => format!(
                "PCI device {}:{}",
                hex4(self.vendor_id),
                hex4(self.device_id)
            ),
        }
    }

    /// The largest memory BAR (not the ROM), prefetchable first on a tie: an address window
    /// into the device, shown as the BAR it is, never as memory.
    pub fn largest_memory_bar(&self) -> Option<&Bar> {
        self.bars
            .iter()
            .filter(|b| b.index < 6 && b.memory)
            .max_by_key(|b| (b.size, b.prefetchable, std::cmp::Reverse(b.index)))
    }
}

/// The name of a function for messages, from the PCI ID database: `vendor device`, or the
/// ids ([`PciFunction::display_name`] without a scan).
pub fn function_name(vendor_id: Option<u16>, device_id: Option<u16>) -> String {
    let vendor = vendor_id.and_then(names::vendor_name);
    let device = match (vendor_id, device_id) {
        (Some(v), Some(d)) => names::device_name(v, d),
        _ => None,
    };
    match (vendor, device) {
        (Some(v), Some(d)) => format!("{v} {d}"),
        (Some(v), None) => format!("{v} device {}", hex4(device_id)),
        _ => format!("PCI device {}:{}", hex4(vendor_id), hex4(device_id)),
    }
}

/// `10de`, or `????` when unknown.
pub(crate) fn hex4(v: Option<u16>) -> String {
    v.map(|v| format!("{v:04x}"))
        .unwrap_or_else(|| "????".into())
}

/// What the scan learns once and every function's links are checked against.
struct Known<'a> {
    /// Registered PCI drivers (`/sys/bus/pci/drivers`).
    drivers: BTreeSet<String>,
    /// Existing IOMMU groups.
    groups: &'a [u32],
}

pub(super) fn scan(scan: &mut Scan<'_>, facts: &super::HostFacts) -> Vec<PciFunction> {
    let root = Path::new("/sys/bus/pci/devices");
    // A `driver` link whose driver is not registered dangles, and an `iommu_group` link to a
    // group that does not exist is no group: lspci reads them so. One listing each, instead
    // of resolving every function's links.
    let known = Known {
        drivers: scan
            .list(Path::new("/sys/bus/pci/drivers"))
            .into_iter()
            .collect(),
        groups: &facts.iommu.group_numbers,
    };
    let mut out = Vec::new();
    for name in scan.list(root) {
        let Ok(address) = name.parse::<PciAddress>() else {
            scan.warn(&root.join(&name), "not a PCI address; skipped");
            continue;
        };
        out.push(function(scan, &known, address, &root.join(&name)));
    }
    out.sort_by_key(|f| f.address);
    out
}

/// [`scan`] of the GPUs alone: every function's class is read (one attribute each), then
/// in full only the display functions (and those whose class cannot be read), the
/// functions on their slots and the members of their IOMMU groups (what the passthrough
/// rules judge a GPU by), the mdev parents and the PFs of the VFs among them (what an mdev
/// parent is judged by). The other functions are left out, and so are their warnings.
pub(super) fn scan_gpus(scan: &mut Scan<'_>, facts: &super::HostFacts) -> Vec<PciFunction> {
    let root = Path::new("/sys/bus/pci/devices");
    let known = Known {
        drivers: scan
            .list(Path::new("/sys/bus/pci/drivers"))
            .into_iter()
            .collect(),
        groups: &facts.iommu.group_numbers,
    };
    let mut all = Vec::new();
    let mut gpus = Vec::new();
    for name in scan.list(root) {
        let Ok(address) = name.parse::<PciAddress>() else {
            scan.warn(&root.join(&name), "not a PCI address; skipped");
            continue;
        };
        let class = scan.hex(&root.join(&name).join("class"), 0xff_ffff);
        if class.is_none_or(|c| c >> 16 == u64::from(CLASS_DISPLAY)) {
            gpus.push(address);
        }
        all.push(address);
    }
    let mut wanted: BTreeSet<PciAddress> = BTreeSet::new();
    for g in &gpus {
        wanted.insert(*g);
        wanted.extend(all.iter().filter(|a| a.same_slot(g)));
        let link = root.join(g.to_string()).join("iommu_group");
        if let Some(group) = scan.link_name(&link) {
            let members = Path::new("/sys/kernel/iommu_groups")
                .join(&group)
                .join("devices");
            wanted.extend(
                scan.list(&members)
                    .iter()
                    .filter_map(|n| n.parse::<PciAddress>().ok())
                    .filter(|a| all.contains(a)),
            );
        }
    }
    // mdev parents: whether each is a GPU's is judged from its function (and its PF's).
    wanted.extend(
        scan.list(Path::new("/sys/class/mdev_bus"))
            .iter()
            .filter_map(|n| n.parse::<PciAddress>().ok())
            .filter(|a| all.contains(a)),
    );
    let read =
        |scan: &mut Scan<'_>, a: PciAddress| function(scan, &known, a, &root.join(a.to_string()));
    let mut out: Vec<PciFunction> = wanted.iter().map(|a| read(scan, *a)).collect();
    // The PFs of the VFs read (a VF is judged with its PF).
    let pfs: BTreeSet<PciAddress> = out
        .iter()
        .filter_map(|f| f.physfn)
        .filter(|pf| !wanted.contains(pf) && all.contains(pf))
        .collect();
    out.extend(pfs.into_iter().map(|a| read(scan, a)));
    out.sort_by_key(|f| f.address);
    out
}

/// Reads the one PCI function at `addr` by the scan's rules ([`PciReader::read`]).
pub fn read_function(
    host: &dyn crate::host::HostOps,
    addr: &PciAddress,
    known_group: Option<u32>,
) -> Result<PciFunction, vm_device_host::HostError> {
    PciReader::new(host).read(addr, known_group)
}

/// Reads PCI functions one at a time by the scan's rules (the same attributes, the same
/// reading of links), for a caller that needs a few now rather than a whole host: `gpu
/// prepare`'s re-check just before it changes the host. What every function's links are
/// checked against (the registered drivers, `/dev` for NVIDIA nodes) is listed once per
/// reader.
pub struct PciReader<'h> {
    scan: Scan<'h>,
    drivers: Option<BTreeSet<String>>,
}

impl<'h> PciReader<'h> {
    /// A reader of `host`.
    pub fn new(host: &'h dyn crate::host::HostOps) -> Self {
        PciReader {
            scan: Scan {
                host,
                warnings: Vec::new(),
                dev_names: None,
                first_error: None,
            },
            drivers: None,
        }
    }

    /// Reads the function at `addr`. Strict where the scan goes on: an attribute it cannot
    /// read, a dangling driver link, a garbled value fails with the path (and the host's
    /// errno when there was one). `known_group` is the function's IOMMU group when the
    /// caller has read it already (not read again). `ENOENT` on the device directory: no
    /// such function.
    pub fn read(
        &mut self,
        addr: &PciAddress,
        known_group: Option<u32>,
    ) -> Result<PciFunction, vm_device_host::HostError> {
        let dir = PathBuf::from(format!("/sys/bus/pci/devices/{addr}"));
        if !self.scan.host.exists(&dir) {
            return Err(vm_device_host::HostError::io(
                "read",
                &dir,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        self.scan.warnings.clear();
        self.scan.first_error = None;
        let drivers = match self.drivers.take() {
            Some(d) => d,
            None => self
                .scan
                .list(Path::new("/sys/bus/pci/drivers"))
                .into_iter()
                .collect(),
        };
        let groups: Vec<u32> = match known_group {
            Some(g) => vec![g],
            None => {
                let mut v: Vec<u32> = self
                    .scan
                    .list(Path::new("/sys/kernel/iommu_groups"))
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                v.sort_unstable();
                v
            }
        };
        let known = Known {
            drivers,
            groups: &groups,
        };
        let f = function_in(&mut self.scan, &known, *addr, &dir, known_group);
        self.drivers = Some(known.drivers);
        if let Some(e) = self.scan.first_error.take() {
            return Err(e);
        }
        if let Some(w) = self.scan.warnings.first() {
            return Err(vm_device_host::HostError::io(
                "read",
                &w.path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, w.message.clone()),
            ));
        }
        Ok(f)
    }
}

fn function(
    scan: &mut Scan<'_>,
    known: &Known<'_>,
    address: PciAddress,
    dir: &Path,
) -> PciFunction {
    function_in(scan, known, address, dir, None)
}

/// [`function`], with the IOMMU group already known (its link not read again).
fn function_in(
    scan: &mut Scan<'_>,
    known: &Known<'_>,
    address: PciAddress,
    dir: &Path,
    known_group: Option<u32>,
) -> PciFunction {
    let sysfs_path = scan
        .host
        .canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf());
    let vendor_id = scan
        .required_hex(&dir.join("vendor"), 0xffff, "vendor id")
        .map(|v| v as u16);
    let device_id = scan
        .required_hex(&dir.join("device"), 0xffff, "device id")
        .map(|v| v as u16);
    let class = scan
        .required_hex(&dir.join("class"), 0xff_ffff, "class")
        .map(|v| v as u32);
    // Details only for GPUs and their companions (and functions whose class is unknown):
    // no decision reads them elsewhere, and skipping them keeps a big host's scan cheap.
    // Other functions are not even listed: their links are read where they may be.
    let detail = class.is_none_or(|c| c >> 16 == CLASS_DISPLAY || super::is_companion_class(c));
    let entries: BTreeSet<String> = if detail {
        scan.list(dir).into_iter().collect()
    } else {
        ["driver", "iommu_group", "physfn"].map(String::from).into()
    };
    let has = |n: &str| entries.contains(n);
    let opt_hex = |scan: &mut Scan<'_>, n: &str, max: u64| {
        if has(n) {
            scan.hex(&dir.join(n), max)
        } else {
            None
        }
    };
    let subsystem_vendor_id = opt_hex(scan, "subsystem_vendor", 0xffff).map(|v| v as u16);
    let subsystem_device_id = opt_hex(scan, "subsystem_device", 0xffff).map(|v| v as u16);
    let revision = opt_hex(scan, "revision", 0xff).map(|v| v as u8);

    let driver = if has("driver") {
        let link = dir.join("driver");
        match scan.link_name(&link) {
            // A dangling link is no driver, as lspci reads it.
            Some(n) if known.drivers.contains(&n) => Some(n),
            Some(n) => {
                scan.warn(
                    &link,
                    format!("dangling link to driver `{n}`; treated as unbound"),
                );
                None
            }
            None => None,
        }
    } else {
        None
    };
    let driver_override = if has("driver_override") {
        scan.attr(&dir.join("driver_override"))
            .filter(|v| v != "(null)" && !v.is_empty())
    } else {
        None
    };
    let numa_node = if has("numa_node") {
        scan.dec::<i64>(&dir.join("numa_node"))
            .and_then(|n| u32::try_from(n).ok())
    } else {
        None
    };
    let bars = if has("resource") {
        parse_resource(scan, &dir.join("resource"))
    } else {
        Vec::new()
    };
    let iommu_group = if known_group.is_some() {
        known_group
    } else if has("iommu_group") {
        let link = dir.join("iommu_group");
        match scan.link_name(&link) {
            Some(n) => match n.parse::<u32>() {
                Ok(g) if known.groups.binary_search(&g).is_ok() => Some(g),
                Ok(_) => {
                    scan.warn(
                        &link,
                        format!("points to IOMMU group {n}, which does not exist"),
                    );
                    None
                }
                Err(_) => {
                    scan.warn(&link, format!("target `{n}` is not a group number"));
                    None
                }
            },
            None => None,
        }
    } else {
        None
    };
    let boot_vga = if has("boot_vga") {
        scan.dec::<u8>(&dir.join("boot_vga")).map(|v| v != 0)
    } else {
        None
    };
    let reset_method = if has("reset_method") {
        scan.attr(&dir.join("reset_method"))
    } else {
        None
    };
    let sriov = if has("sriov_totalvfs") {
        let total = scan.dec::<u32>(&dir.join("sriov_totalvfs"));
        let num = if has("sriov_numvfs") {
            scan.dec::<u32>(&dir.join("sriov_numvfs"))
        } else {
            None
        };
        let mut vfs: Vec<(u32, PciAddress)> = Vec::new();
        for e in entries.iter().filter(|e| e.starts_with("virtfn")) {
            let Ok(n) = e["virtfn".len()..].parse::<u32>() else {
                continue;
            };
            if let Some(a) = link_address(scan, &dir.join(e)) {
                vfs.push((n, a));
            }
        }
        vfs.sort();
        total.map(|total_vfs| Sriov {
            total_vfs,
            num_vfs: num.unwrap_or(vfs.len() as u32),
            vfs: vfs.into_iter().map(|(_, a)| a).collect(),
        })
    } else {
        None
    };
    let physfn = if has("physfn") {
        link_address(scan, &dir.join("physfn"))
    } else {
        None
    };
    let nvidia_vgpu = if has("nvidia") {
        super::mdev::nvidia_vgpu(scan, &dir.join("nvidia"))
    } else {
        None
    };
    let mut f = PciFunction {
        address,
        sysfs_path,
        vendor_id,
        device_id,
        subsystem_vendor_id,
        subsystem_device_id,
        class,
        revision,
        vendor_name: vendor_id.and_then(names::vendor_name).map(str::to_string),
        device_name: match (vendor_id, device_id) {
            (Some(v), Some(d)) => names::device_name(v, d).map(str::to_string),
            _ => None,
        },
        driver,
        driver_override,
        numa_node,
        bars,
        iommu_group,
        boot_vga,
        reset_method,
        sriov,
        physfn,
        vram: None,
        vram_unknown: None,
        device_nodes: Vec::new(),
        nvidia_vgpu,
    };
    if f.is_display() || class.is_some_and(super::is_companion_class) {
        match device_nodes_with(
            scan.host,
            &address,
            f.driver.as_deref(),
            has("drm"),
            &mut scan.dev_names,
        ) {
            Ok(n) => f.device_nodes = n,
            Err(e) => scan.warn(dir, format!("device nodes unknown: {e}")),
        }
    }
    if f.is_display() {
        // NVML is asked later (`HostInventory::scan`), after the holder scan: it opens
        // the GPU's device nodes in this process.
        if has("mem_info_vram_total") {
            f.vram = scan
                .dec::<u64>(&dir.join("mem_info_vram_total"))
                .map(|bytes| Vram {
                    bytes,
                    source: VramSource::AmdgpuSysfs,
                });
        } else if f.driver.as_deref() == Some("xe") {
            let mut total = None;
            for t in entries.iter().filter(|e| {
                e.strip_prefix("tile")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }) {
                let p = dir.join(t).join("physical_vram_size_bytes");
                if let Some(b) = scan.dec::<u64>(&p) {
                    total = Some(total.unwrap_or(0u64).saturating_add(b));
                }
            }
            f.vram = total.map(|bytes| Vram {
                bytes,
                source: VramSource::XeSysfs,
            });
        }
        if f.vram.is_none() && f.driver.as_deref() != Some("nvidia") {
            f.vram_unknown = Some(match f.driver.as_deref() {
                Some(d) => format!("{d} does not report its memory size in sysfs"),
                None => "no driver bound to report it".into(),
            });
        }
    }
    f
}

/// The device nodes through which host processes use PCI function `addr`: its DRM nodes
/// (`/dev/dri/cardN`, `renderDN` from its `drm/` directory, when `has_drm`) and, when the
/// `nvidia` driver is bound, its `/dev/nvidiaN` (the minor from
/// `/proc/driver/nvidia/gpus/ADDR/information`, or every `/dev/nvidiaN` when the driver
/// does not say). One rule for the passthrough probe, `gpu prepare` and `gpu doctor`.
pub fn device_nodes(
    host: &dyn crate::host::HostOps,
    addr: &PciAddress,
    driver: Option<&str>,
    has_drm: bool,
) -> Result<Vec<PathBuf>, vm_device_host::HostError> {
    device_nodes_with(host, addr, driver, has_drm, &mut None)
}

/// [`device_nodes`] with the listing of `/dev` kept in `dev` across calls (a scan of many
/// NVIDIA GPUs lists it once).
pub(super) fn device_nodes_with(
    host: &dyn crate::host::HostOps,
    addr: &PciAddress,
    driver: Option<&str>,
    has_drm: bool,
    dev: &mut Option<Vec<String>>,
) -> Result<Vec<PathBuf>, vm_device_host::HostError> {
    let mut nodes = Vec::new();
    if has_drm {
        let drm = PathBuf::from(format!("/sys/bus/pci/devices/{addr}/drm"));
        match host.list_dir(&drm) {
            Ok(names) => nodes.extend(
                names
                    .into_iter()
                    .filter(|n| n.starts_with("card") || n.starts_with("renderD"))
                    .map(|n| PathBuf::from("/dev/dri").join(n)),
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if driver == Some("nvidia") {
        let info = PathBuf::from(format!("/proc/driver/nvidia/gpus/{addr}/information"));
        let minor = match host.read_attr(&info) {
            Ok(text) => text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "Device Minor").then(|| v.trim().parse::<u32>().ok())?
            }),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        match minor {
            Some(m) => nodes.push(PathBuf::from(format!("/dev/nvidia{m}"))),
            None => nodes.extend(
                dev.get_or_insert_with(|| host.list_dir(Path::new("/dev")).unwrap_or_default())
                    .iter()
                    .filter(|n| {
                        n.strip_prefix("nvidia")
                            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .map(|n| PathBuf::from("/dev").join(n)),
            ),
        }
    }
    Ok(nodes)
}

/// VRAM of the display functions bound to `nvidia`, from NVML; where NVML is not installed or
/// fails, says why there is no figure.
pub(super) fn nvml_vram(scan: &mut Scan<'_>, functions: &mut [PciFunction]) {
    for f in functions
        .iter_mut()
        .filter(|f| f.is_display() && f.vram.is_none() && f.driver.as_deref() == Some("nvidia"))
    {
        match scan.host.nvml_memory_total(&f.address) {
            Ok(Some(bytes)) => {
                f.vram = Some(Vram {
                    bytes,
                    source: VramSource::Nvml,
                })
            }
            Ok(None) => {
                f.vram_unknown =
                    Some("NVML (libnvidia-ml.so.1) is not installed to report it".into())
            }
            Err(e) => {
                scan.warn(&f.sysfs_path, format!("memory size unknown: {e}"));
                f.vram_unknown = Some(format!("NVML failed: {e}"));
            }
        }
    }
}

fn link_address(scan: &mut Scan<'_>, link: &Path) -> Option<PciAddress> {
    let name = scan.link_name(link)?;
    match name.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            scan.warn(
                link,
                format!("target `{}` is not a PCI address", truncate(&name)),
            );
            None
        }
    }
}

fn parse_resource(scan: &mut Scan<'_>, path: &Path) -> Vec<Bar> {
    let Some(text) = scan.attr(path) else {
        return Vec::new();
    };
    let mut bars = Vec::new();
    for (i, line) in text.lines().enumerate().take(7) {
        let fields: Vec<Option<u64>> = line.split_whitespace().map(parse_hex).collect();
        let [Some(start), Some(end), Some(flags)] = fields[..] else {
            scan.warn(
                path,
                format!(
                    "line {}: not `start end flags`: {:?}",
                    i + 1,
                    truncate(line)
                ),
            );
            continue;
        };
        if start == 0 && end == 0 {
            continue;
        }
        if end < start {
            scan.warn(path, format!("line {}: end below start", i + 1));
            continue;
        }
        bars.push(Bar {
            index: i as u8,
            start,
            size: end - start + 1,
            memory: flags & IORESOURCE_MEM != 0 && flags & IORESOURCE_IO == 0,
            prefetchable: flags & IORESOURCE_PREFETCH != 0,
            is_64bit: flags & IORESOURCE_MEM_64 != 0,
        });
    }
    bars
}
