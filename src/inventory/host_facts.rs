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
}

impl HostFacts {
    /// True when module `name` is loaded (either spelling). Unknown module list → false.
    pub fn module_loaded(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.modules.as_ref().is_some_and(|m| m.contains(&n))
    }

    /// The kernel parameters that turn the IOMMU on for this CPU.
    pub fn iommu_params_remedy(&self) -> &'static str {
        match (&self.cpu_vendor, self.iommu.kind) {
            (_, Some(IommuKind::AmdVi)) | (Some(CpuVendor::Amd), _) => "amd_iommu=on iommu=pt",
            _ => "intel_iommu=on iommu=pt",
        }
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
    let cpu_vendor = match scan.host.cpu_vendor() {
        Ok(v) => Some(match v.as_str() {
            "GenuineIntel" => CpuVendor::Intel,
            "AuthenticAMD" | "HygonGenuine" => CpuVendor::Amd,
            _ => CpuVendor::Other(v),
        }),
        Err(e) => {
            if !e.is_not_found() {
                scan.warn(Path::new("/proc/cpuinfo"), e.to_string());
            }
            None
        }
    };
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
    }
}
