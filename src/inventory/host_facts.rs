//! Host-wide facts: IOMMU, CPU vendor, kernel parameters, modules, device nodes.

use std::collections::BTreeSet;
use std::path::Path;

use super::Scan;

/// Which IOMMU implementation the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuKind {
    /// Intel VT-d (`dmar*` units).
    IntelVtd,
    /// AMD-Vi (`ivhd*` units).
    AmdVi,
    /// Some other unit (ARM SMMU, virtio-iommu, …).
    Other,
}

/// The IOMMU as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IommuState {
    /// True when the kernel has IOMMU units or groups.
    pub enabled: bool,
    /// `sys/class/iommu` entries.
    pub units: Vec<String>,
    /// The kind, from the unit names.
    pub kind: Option<IommuKind>,
    /// Number of IOMMU groups.
    pub group_count: usize,
    /// The groups' numbers (`/sys/kernel/iommu_groups`), sorted.
    pub group_numbers: Vec<u32>,
}

/// CPU vendor from `/proc/cpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuVendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD` (and `HygonGenuine`, which uses AMD-Vi).
    Amd,
    /// Anything else, as written.
    Other(String),
}

/// IOMMU-related kernel parameters from `/proc/cmdline`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelParams {
    /// `intel_iommu=` value.
    pub intel_iommu: Option<String>,
    /// `amd_iommu=` value.
    pub amd_iommu: Option<String>,
    /// `iommu=` value (`pt`).
    pub iommu: Option<String>,
}

/// Whether the host is itself a virtual machine, and what says so.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Virtualization {
    /// True inside a virtual machine (a guest).
    pub guest: bool,
    /// The hypervisor, when something names it (`QEMU`, `Amazon EC2`, `xen`).
    pub hypervisor: Option<String>,
    /// The files that said so, with their values.
    pub evidence: Vec<String>,
}

impl Virtualization {
    /// `a virtual machine (QEMU)`, or `a virtual machine` when nothing names the hypervisor.
    pub fn describe(&self) -> String {
        match &self.hypervisor {
            Some(h) => format!("a virtual machine ({h})"),
            None => "a virtual machine".into(),
        }
    }
}

/// DMI `sys_vendor` / `product_name` values that only virtual machines report, with the
/// hypervisor they name.
const DMI_GUESTS: [(&str, &str); 12] = [
    ("QEMU", "QEMU"),
    ("KVM", "KVM"),
    ("Amazon EC2", "Amazon EC2"),
    ("Google Compute Engine", "Google Compute Engine"),
    ("Google", "Google Compute Engine"),
    ("VMware", "VMware"),
    ("innotek GmbH", "VirtualBox"),
    ("VirtualBox", "VirtualBox"),
    ("Xen", "Xen"),
    ("OpenStack", "OpenStack"),
    ("Virtual Machine", "Hyper-V"),
    ("Firecracker", "Firecracker"),
];

fn dmi_hypervisor(value: &str) -> Option<&'static str> {
    DMI_GUESTS
        .iter()
        .find(|(needle, _)| value.starts_with(needle) || value == *needle)
        .map(|(_, name)| *name)
}

/// The kernel parameters that turn the IOMMU on: those of the IOMMU units present (`dmar*`:
/// `intel_iommu`, `ivhd*`: `amd_iommu`, as with QEMU's emulated VT-d on an AMD host), else
/// those of the CPU vendor.
pub fn iommu_params_for(kind: Option<IommuKind>, cpu: Option<&CpuVendor>) -> &'static str {
    match (kind, cpu) {
        (Some(IommuKind::IntelVtd), _) => "intel_iommu=on iommu=pt",
        (Some(IommuKind::AmdVi), _) | (_, Some(CpuVendor::Amd)) => "amd_iommu=on iommu=pt",
        _ => "intel_iommu=on iommu=pt",
    }
}

/// Host-wide facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostFacts {
    /// IOMMU state.
    pub iommu: IommuState,
    /// CPU vendor.
    pub cpu_vendor: Option<CpuVendor>,
    /// Whole kernel command line.
    pub cmdline: Option<String>,
    /// IOMMU parameters parsed from it.
    pub params: KernelParams,
    /// Loaded modules, `-` normalised to `_`; `None` when `/proc/modules` is unreadable.
    pub modules: Option<BTreeSet<String>>,
    /// `/dev/vfio/vfio` exists.
    pub dev_vfio: bool,
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// Whether this host is a virtual machine.
    pub virtualization: Virtualization,
}

impl HostFacts {
    /// True when module `name` is loaded (either spelling). Unknown module list → false.
    pub fn module_loaded(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.modules.as_ref().is_some_and(|m| m.contains(&n))
    }

    /// The kernel parameters that turn the IOMMU on here ([`iommu_params_for`]).
    pub fn iommu_params_remedy(&self) -> &'static str {
        iommu_params_for(self.iommu.kind, self.cpu_vendor.as_ref())
    }
}

impl HostFacts {
    /// Scans only the host-wide facts (no PCI functions), for callers that need the IOMMU,
    /// CPU and guest facts of one decision (`gpu prepare` refusing without an IOMMU).
    pub fn scan(host: &dyn crate::host::HostOps) -> HostFacts {
        let mut s = Scan {
            host,
            warnings: Vec::new(),
            dev_names: None,
            first_error: None,
        };
        scan(&mut s)
    }
}

pub(super) fn scan(scan: &mut Scan<'_>) -> HostFacts {
    let units = scan.list(Path::new("/sys/class/iommu"));
    let group_names = scan.list(Path::new("/sys/kernel/iommu_groups"));
    let group_count = group_names.len();
    let mut group_numbers: Vec<u32> = group_names.iter().filter_map(|g| g.parse().ok()).collect();
    group_numbers.sort_unstable();
    let kind = units.first().map(|u| {
        if u.starts_with("dmar") {
            IommuKind::IntelVtd
        } else if u.starts_with("ivhd") {
            IommuKind::AmdVi
        } else {
            IommuKind::Other
        }
    });
    let cpuinfo_path = Path::new("/proc/cpuinfo");
    let cpuinfo = scan.attr(cpuinfo_path);
    let field = |name: &str| {
        cpuinfo.as_deref().and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        })
    };
    let cpu_vendor = match field("vendor_id") {
        Some(v) => Some(match v.as_str() {
            "GenuineIntel" => CpuVendor::Intel,
            "AuthenticAMD" | "HygonGenuine" => CpuVendor::Amd,
            _ => CpuVendor::Other(v),
        }),
        None => {
            if cpuinfo.is_some() {
                scan.warn(cpuinfo_path, "no vendor_id line");
            }
            None
        }
    };
    let hypervisor_flag =
        field("flags").is_some_and(|f| f.split_whitespace().any(|w| w == "hypervisor"));
    let virtualization = virtualization(scan, hypervisor_flag);
    let cmdline = scan.attr(Path::new("/proc/cmdline"));
    let mut params = KernelParams::default();
    for word in cmdline.as_deref().unwrap_or("").split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            match k {
                "intel_iommu" => params.intel_iommu = Some(v.to_string()),
                "amd_iommu" => params.amd_iommu = Some(v.to_string()),
                "iommu" => params.iommu = Some(v.to_string()),
                _ => {}
            }
        }
    }
    let modules = match scan.host.loaded_modules() {
        Ok(m) => Some(m.into_iter().map(|n| n.replace('-', "_")).collect()),
        Err(e) => {
            if !e.is_not_found() {
                scan.warn(Path::new("/proc/modules"), e.to_string());
            }
            None
        }
    };
    HostFacts {
        iommu: IommuState {
            enabled: !units.is_empty() || group_count > 0,
            units,
            kind,
            group_count,
            group_numbers,
        },
        cpu_vendor,
        cmdline,
        params,
        modules,
        dev_vfio: scan.host.exists(Path::new("/dev/vfio/vfio")),
        dev_kvm: scan.host.exists(Path::new("/dev/kvm")),
        virtualization,
    }
}

/// A guest shows itself by the cpuinfo `hypervisor` flag (CPUID's hypervisor bit), by DMI
/// naming a hypervisor, or by `/sys/hypervisor/type` (Xen). DMI and `/sys/hypervisor` are
/// absent on many guests (Firecracker has no DMI), so any one of them is enough.
fn virtualization(scan: &mut Scan<'_>, hypervisor_flag: bool) -> Virtualization {
    let mut v = Virtualization::default();
    if hypervisor_flag {
        v.guest = true;
        v.evidence.push("/proc/cpuinfo flags: hypervisor".into());
    }
    for attr in ["sys_vendor", "product_name"] {
        let path = format!("/sys/class/dmi/id/{attr}");
        if let Some(value) = scan.attr(Path::new(&path)) {
            let value = value.trim().to_string();
            if let Some(h) = dmi_hypervisor(&value) {
                v.guest = true;
                v.hypervisor.get_or_insert_with(|| h.to_string());
                v.evidence.push(format!("{path} = {value}"));
            }
        }
    }
    if let Some(t) = scan.attr(Path::new("/sys/hypervisor/type")) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            v.guest = true;
            v.hypervisor.get_or_insert_with(|| t.clone());
            v.evidence.push(format!("/sys/hypervisor/type = {t}"));
        }
    }
    v
}
