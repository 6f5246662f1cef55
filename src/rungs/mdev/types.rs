//! One model for every shareable GPU type: mdev types (`mdev_supported_types`) and NVIDIA's
//! vendor-VFIO vGPU types (`nvidia/creatable_vgpu_types` of VFs), and the choice of type and
//! parent for a request.

use vm_device_host::PciAddress;

use super::{MdevError, MdevType};
use crate::inventory::{HostInventory, MdevParent, MdevTypeInfo};
use crate::rungs::mdev::probe::did_you_mean;

/// How a type's instances are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Write a UUID to `mdev_supported_types/T/create`.
    Mdev,
    /// Write the type id to a VF's `nvidia/current_vgpu_type`.
    NvidiaVfio,
}

/// One type of one parent, the same shape for both backends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TypeRow {
    /// Parent: `mdev_bus` name (`0000:00:02.0`, `mbochs`) or the NVIDIA PF's address.
    pub parent: String,
    /// The parent's PCI address, when it is a PCI function.
    pub parent_pci: Option<PciAddress>,
    /// The parent's NUMA node, when known.
    pub numa_node: Option<u32>,
    /// Type id (`i915-GVTg_V5_4`, `nvidia-228`, `mbochs-small`; NVIDIA vendor-VFIO types are
    /// shown as `nvidia-ID` too).
    pub type_id: String,
    /// `name`, when the driver gives one (`GRID T4-8Q`).
    pub name: Option<String>,
    /// `description`, when the driver gives one.
    pub description: Option<String>,
    /// `device_api` (`vfio-pci`); vendor-VFIO types are always `vfio-pci`.
    pub device_api: Option<String>,
    /// Instances that can be created now (vendor-VFIO: free VFs that can take the type).
    pub available_instances: u32,
    /// Active instances: mdev UUIDs, or VF addresses for vendor-VFIO.
    pub active: Vec<String>,
    /// The technology.
    pub mdev_type: MdevType,
    /// How instances are created.
    pub backend: Backend,
    /// The vendor module that must be loaded first, when it is not.
    pub module_missing: Option<String>,
}

impl TypeRow {
    /// True when `wanted` names this type: its id, its name, or (NVIDIA) its bare number.
    pub fn matches(&self, wanted: &str) -> bool {
        self.type_id.eq_ignore_ascii_case(wanted)
            || self
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            || (self.backend == Backend::NvidiaVfio
                && self.type_id.strip_prefix("nvidia-") == Some(wanted.trim()))
    }

    /// `id (name)` or the id.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if n != &self.type_id => format!("{} ({n})", self.type_id),
            _ => self.type_id.clone(),
        }
    }
}

fn numa_of(inv: &HostInventory, addr: Option<PciAddress>) -> Option<u32> {
    inv.function(&addr?)?.numa_node
}

fn module_missing(inv: &HostInventory, p: &MdevParent) -> Option<String> {
    let m = p.vendor_module()?;
    // Without /proc/modules we cannot tell; the types being listed means it is loaded.
    (inv.host.modules.is_some() && !inv.host.module_loaded(m)).then(|| m.replace('_', "-"))
}

fn mdev_row(inv: &HostInventory, p: &MdevParent, t: &MdevTypeInfo) -> TypeRow {
    TypeRow {
        parent: p.name.clone(),
        parent_pci: p.pci_address,
        numa_node: numa_of(inv, p.pci_address),
        type_id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        device_api: t.device_api.clone(),
        available_instances: t.available_instances.unwrap_or(0),
        active: t.devices.clone(),
        mdev_type: MdevType::classify(p.driver.as_deref(), &t.id),
        backend: Backend::Mdev,
        module_missing: module_missing(inv, p),
    }
}

/// Every type of the host (or of `parent`: an mdev_bus name, a PF or VF address), mdev types
/// first in parent order, then NVIDIA vendor-VFIO types per PF.
pub fn list(inv: &HostInventory, parent: Option<&str>) -> Vec<TypeRow> {
    let mut rows = Vec::new();
    for p in &inv.mdev_parents {
        if parent.is_some_and(|want| !parent_matches(p.name.as_str(), p.pci_address, want)) {
            continue;
        }
        rows.extend(p.types.iter().map(|t| mdev_row(inv, p, t)));
    }
    for pf in inv.functions.iter().filter(|f| f.sriov.is_some()) {
        let vfs = &pf.sriov.as_ref().map(|s| s.vfs.clone()).unwrap_or_default();
        let in_scope = parent.is_none_or(|want| {
            parent_matches(&pf.address.to_string(), Some(pf.address), want)
                || vfs
                    .iter()
                    .any(|v| parent_matches(&v.to_string(), Some(*v), want))
        });
        if !in_scope {
            continue;
        }
        let mut by_id: std::collections::BTreeMap<u32, TypeRow> = Default::default();
        for vf in vfs {
            let Some(nv) = inv.function(vf).and_then(|f| f.nvidia_vgpu.as_ref()) else {
                continue;
            };
            let row = |id: u32, name: Option<String>| TypeRow {
                parent: pf.address.to_string(),
                parent_pci: Some(pf.address),
                numa_node: pf.numa_node,
                type_id: format!("nvidia-{id}"),
                name,
                description: None,
                device_api: Some("vfio-pci".into()),
                available_instances: 0,
                active: Vec::new(),
                mdev_type: MdevType::NvidiaVgpu,
                backend: Backend::NvidiaVfio,
                module_missing: None,
            };
            if let Some(cur) = nv.current {
                by_id
                    .entry(cur)
                    .or_insert_with(|| row(cur, None))
                    .active
                    .push(vf.to_string());
                continue;
            }
            for (id, name) in &nv.creatable {
                let r = by_id
                    .entry(*id)
                    .or_insert_with(|| row(*id, Some(name.clone())));
                r.name.get_or_insert_with(|| name.clone());
                r.available_instances += 1;
            }
        }
        rows.extend(by_id.into_values());
    }
    rows
}

fn parent_matches(name: &str, pci: Option<PciAddress>, want: &str) -> bool {
    if name.eq_ignore_ascii_case(want) {
        return true;
    }
    match (pci, want.parse::<PciAddress>()) {
        (Some(a), Ok(w)) => a == w,
        _ => false,
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeRequest {
    /// Type id or name.
    pub wanted: String,
    /// Parent (mdev_bus name, PF or VF address); `None` lets the choice be made.
    pub parent: Option<String>,
    /// Prefer parents on this NUMA node.
    pub numa_node: Option<u32>,
}

/// The chosen type on the chosen parent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Choice {
    /// An mdev type.
    Mdev {
        /// `mdev_bus` name.
        parent: String,
        /// Its PCI address, when it is one.
        parent_pci: Option<PciAddress>,
        /// Type id.
        type_id: String,
        /// The technology.
        mdev_type: MdevType,
    },
    /// An NVIDIA vendor-VFIO type on a VF.
    NvidiaVfio {
        /// The physical function.
        pf: PciAddress,
        /// The VF that will carry the vGPU.
        vf: PciAddress,
        /// Numeric type id.
        type_id: u32,
        /// A stale type on that VF that must be cleared first (written 0).
        stale: Option<u32>,
    },
}

/// Picks a type and a parent. Parents with a free instance only; the requested NUMA node
/// first when any parent there has room; then least loaded (fewest active instances, then
/// most instances left); then by name so the choice is deterministic.
pub fn choose(inv: &HostInventory, req: &TypeRequest) -> Result<Choice, MdevError> {
    if let Some(p) = &req.parent {
        check_parent(inv, p)?;
    }
    let rows = list(inv, req.parent.as_deref());
    let matching: Vec<&TypeRow> = rows.iter().filter(|r| r.matches(&req.wanted)).collect();
    if matching.is_empty() {
        return Err(not_found(inv, req, &rows));
    }
    if let Some(r) = matching.iter().find(|r| r.module_missing.is_some()) {
        if matching.iter().all(|r| r.module_missing.is_some()) {
            return Err(MdevError::ModuleNotLoaded {
                device: r.parent.clone(),
                module: r.module_missing.clone().unwrap_or_default(),
            });
        }
    }
    let mut free: Vec<&TypeRow> = matching
        .iter()
        .copied()
        .filter(|r| r.available_instances > 0 && r.module_missing.is_none())
        .collect();
    if free.is_empty() {
        return Err(no_instances(inv, &rows, &matching));
    }
    if let Some(node) = req.numa_node {
        if free.iter().any(|r| r.numa_node == Some(node)) {
            free.retain(|r| r.numa_node == Some(node));
        }
    }
    free.sort_by_key(|r| {
        (
            parent_load(&rows, &r.parent),
            std::cmp::Reverse(r.available_instances),
            r.parent.clone(),
        )
    });
    let best = free[0];
    match best.backend {
        Backend::Mdev => Ok(Choice::Mdev {
            parent: best.parent.clone(),
            parent_pci: best.parent_pci,
            type_id: best.type_id.clone(),
            mdev_type: best.mdev_type,
        }),
        Backend::NvidiaVfio => nvidia_choice(inv, best, req.parent.as_deref()),
    }
}

/// Active instances on a parent, across its types.
fn parent_load(rows: &[TypeRow], parent: &str) -> usize {
    rows.iter()
        .filter(|r| r.parent == parent)
        .map(|r| r.active.len())
        .sum()
}

fn nvidia_choice(
    inv: &HostInventory,
    row: &TypeRow,
    asked: Option<&str>,
) -> Result<Choice, MdevError> {
    let pf = row.parent_pci.ok_or_else(|| MdevError::Sriov {
        pf: row.parent.clone(),
        detail: "NVIDIA vendor-VFIO parent without a PCI address".into(),
    })?;
    let id: u32 = row
        .type_id
        .trim_start_matches("nvidia-")
        .parse()
        .map_err(|_| MdevError::Sriov {
            pf: pf.to_string(),
            detail: format!("type id {} is not numeric", row.type_id),
        })?;
    let asked_vf = asked.and_then(|a| a.parse::<PciAddress>().ok());
    let vfs = inv
        .function(&pf)
        .and_then(|f| f.sriov.as_ref())
        .map(|s| s.vfs.clone())
        .unwrap_or_default();
    for vf in vfs {
        if asked_vf.is_some_and(|a| a != pf && a != vf) {
            continue;
        }
        let Some(nv) = inv.function(&vf).and_then(|f| f.nvidia_vgpu.as_ref()) else {
            continue;
        };
        if nv.current.is_none() && nv.creatable.iter().any(|(c, _)| *c == id) {
            return Ok(Choice::NvidiaVfio {
                pf,
                vf,
                type_id: id,
                stale: None,
            });
        }
    }
    // Only a VF the user named may have a stale type cleared: we never take over a VF that
    // may belong to a stopped VM on our own.
    if let Some(vf) = asked_vf.filter(|a| *a != pf) {
        if let Some(cur) = inv
            .function(&vf)
            .and_then(|f| f.nvidia_vgpu.as_ref())
            .and_then(|n| n.current)
        {
            return Ok(Choice::NvidiaVfio {
                pf,
                vf,
                type_id: id,
                stale: Some(cur),
            });
        }
    }
    Err(MdevError::NoInstances {
        type_id: row.type_id.clone(),
        parents: vec![pf.to_string()],
        hint: "every virtual function of this GPU already carries a vGPU: free one (`vm-cli gpu mdev-remove VF`) or enable more VFs".into(),
    })
}

/// Checks that `want` names an mdev parent or an SR-IOV PF/VF of `inv`; otherwise says
/// which module is missing, or lists the parents that exist.
pub fn check_parent(inv: &HostInventory, want: &str) -> Result<(), MdevError> {
    let mdev = inv
        .mdev_parents
        .iter()
        .any(|p| parent_matches(&p.name, p.pci_address, want));
    let pci = want.parse::<PciAddress>().ok();
    let sriov = pci.is_some_and(|a| {
        inv.functions.iter().any(|f| {
            f.sriov.is_some()
                && (f.address == a || f.sriov.as_ref().is_some_and(|s| s.vfs.contains(&a)))
        })
    });
    if mdev || sriov {
        return Ok(());
    }
    if let Some(a) = pci {
        if let Some(f) = inv.function(&a) {
            let module = match (f.vendor_id, f.driver.as_deref()) {
                (Some(0x8086), Some("i915")) => Some("kvmgt"),
                (Some(0x10de), Some("nvidia")) => Some("nvidia-vgpu-vfio"),
                _ => None,
            };
            if let Some(m) = module.filter(|m| !inv.host.module_loaded(m)) {
                return Err(MdevError::ModuleNotLoaded {
                    device: a.to_string(),
                    module: m.to_string(),
                });
            }
        }
    }
    let mut known: Vec<String> = inv.mdev_parents.iter().map(|p| p.name.clone()).collect();
    known.extend(
        inv.functions
            .iter()
            .filter(|f| f.sriov.as_ref().is_some_and(|s| !s.vfs.is_empty()))
            .map(|f| f.address.to_string()),
    );
    Err(MdevError::ParentNotFound {
        parent: want.to_string(),
        known,
    })
}

fn not_found(inv: &HostInventory, req: &TypeRequest, rows: &[TypeRow]) -> MdevError {
    // A GPU whose vendor module is missing explains an empty list better than "no such type".
    if rows.is_empty() {
        // Name the module of the vendor the type belongs to, when the name says which.
        let w = req.wanted.to_ascii_lowercase();
        let looks_intel = w.starts_with("i915-") || w.starts_with("gvtg");
        let looks_nvidia = w.starts_with("nvidia") || w.starts_with("grid");
        for gpu in &inv.gpus {
            let Some(f) = inv.function(&gpu.address) else {
                continue;
            };
            if req
                .parent
                .as_deref()
                .is_some_and(|p| !parent_matches(&f.address.to_string(), Some(f.address), p))
            {
                continue;
            }
            let module = match (f.vendor_id, f.driver.as_deref()) {
                (Some(0x8086), Some("i915")) if !looks_nvidia => "kvmgt",
                (Some(0x10de), Some("nvidia")) if f.sriov.is_none() && !looks_intel => {
                    "nvidia-vgpu-vfio"
                }
                _ => continue,
            };
            if !inv.host.module_loaded(module) {
                return MdevError::ModuleNotLoaded {
                    device: f.address.to_string(),
                    module: module.into(),
                };
            }
        }
    }
    let infos: Vec<MdevTypeInfo> = rows
        .iter()
        .map(|r| MdevTypeInfo {
            id: r.type_id.clone(),
            name: r.name.clone(),
            description: None,
            device_api: None,
            available_instances: None,
            devices: Vec::new(),
        })
        .collect();
    let refs: Vec<&MdevTypeInfo> = infos.iter().collect();
    let mut known: Vec<String> = rows.iter().map(TypeRow::label).collect();
    known.sort();
    known.dedup();
    MdevError::TypeNotFound {
        wanted: req.wanted.clone(),
        scope: req.parent.clone().unwrap_or_else(|| "this host".into()),
        did_you_mean: did_you_mean(&req.wanted, &refs),
        known,
    }
}

fn no_instances(_inv: &HostInventory, rows: &[TypeRow], matching: &[&TypeRow]) -> MdevError {
    let parents: Vec<String> = matching.iter().map(|r| r.parent.clone()).collect();
    let type_id = matching[0].type_id.clone();
    let mut room: Vec<String> = rows
        .iter()
        .filter(|r| parents.contains(&r.parent) && r.available_instances > 0)
        .map(|r| {
            format!(
                "{} on {} ({} left)",
                r.label(),
                r.parent,
                r.available_instances
            )
        })
        .collect();
    room.dedup();
    // NVIDIA mdev GPUs run one vGPU type at a time: other types read 0 while one is active.
    let nvidia_busy: Vec<String> = matching
        .iter()
        .filter(|r| r.mdev_type == MdevType::NvidiaVgpu && r.backend == Backend::Mdev)
        .filter_map(|r| {
            let used: Vec<&str> = rows
                .iter()
                .filter(|o| o.parent == r.parent && !o.active.is_empty() && o.type_id != r.type_id)
                .map(|o| o.type_id.as_str())
                .collect();
            (!used.is_empty()).then(|| format!("{} already runs {}", r.parent, used.join(", ")))
        })
        .collect();
    let hint = if !nvidia_busy.is_empty() {
        format!(
            "an NVIDIA GPU runs one vGPU type at a time and {}: create that type instead, remove its instances, or use another GPU{}",
            nvidia_busy.join("; "),
            if room.is_empty() { String::new() } else { format!("; types with room: {}", room.join(", ")) }
        )
    } else if room.is_empty() {
        "no type of these parents has room: remove an unused mediated device (`vm-cli gpu mdev-remove UUID`)".into()
    } else {
        format!("types that still have room: {}", room.join(", "))
    };
    MdevError::NoInstances {
        type_id,
        parents,
        hint,
    }
}
