//! The node's DRA devices: one per whole GPU, SR-IOV VF, free mdev instance slot, NVIDIA
//! vGPU type on a VF and wgpu share, each with the attributes a DeviceClass or a claim's
//! CEL selector can test. Pure: computed from the inventory and the rungs' candidates.
//!
//! Device names are DNS labels (what `resource.k8s.io` requires) derived from what the
//! device is, so they are stable across agent restarts: `gpu-0000-86-00-0`,
//! `vf-0000-03-00-4`, `mdev-0000-00-02-0-i915-gvtg-v5-4-1`, `vgpu-0000-03-00-4-557`,
//! `wgpu-0`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use vm_device::inventory::HostInventory;
use vm_device::ladder::{Candidate, Target};
use vm_passthrough::PciAddress;

/// A device attribute's value (the four kinds `resource.k8s.io/v1` has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attr {
    /// `int`.
    Int(i64),
    /// `bool`.
    Bool(bool),
    /// `string` (at most 64 characters).
    String(String),
    /// `version` (semantic version).
    Version(String),
}

/// What a DRA device is on the host, and so what preparing it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DraKind {
    /// A whole GPU: its IOMMU group is bound to vfio-pci at prepare.
    Gpu {
        /// The display function.
        address: PciAddress,
        /// Companion functions that move with it (audio, USB-C).
        companions: Vec<PciAddress>,
    },
    /// An SR-IOV virtual function, bound to vfio-pci at prepare.
    Vf {
        /// Its physical function.
        pf: PciAddress,
        /// The VF.
        vf: PciAddress,
    },
    /// One instance of an mdev type: the mdev is created at prepare and removed at
    /// unprepare.
    Mdev {
        /// Parent (PCI address or mdev_bus name).
        parent: String,
        /// Type id.
        type_id: String,
        /// Slot number among the type's instances on this parent.
        slot: u32,
    },
    /// An NVIDIA vendor-VFIO vGPU type on a VF: the type is set and the VF bound at
    /// prepare.
    NvidiaVgpu {
        /// The VF.
        vf: PciAddress,
        /// Numeric type id (`current_vgpu_type`).
        type_id: u32,
    },
    /// One share of the software (wgpu) rung: nothing on the host changes.
    Wgpu {
        /// Share number.
        share: u32,
    },
}

/// One device of the node's ResourceSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraDevice {
    /// The device name: a DNS label, unique on the node.
    pub name: String,
    /// What it is.
    pub kind: DraKind,
    /// Attributes. Unqualified names are in the driver's domain; `resource.kubernetes.io/`
    /// names are Kubernetes' standard attributes.
    pub attributes: BTreeMap<String, Attr>,
    /// Capacities (`memory` in bytes where the host says).
    pub capacity: BTreeMap<String, u64>,
}

impl DraDevice {
    /// The rung (`passthrough`, `mdev`, `wgpu`) as the `rung` attribute names it.
    pub fn rung(&self) -> &'static str {
        match self.kind {
            DraKind::Gpu { .. } => "passthrough",
            DraKind::Vf { .. } | DraKind::Mdev { .. } | DraKind::NvidiaVgpu { .. } => "mdev",
            DraKind::Wgpu { .. } => "wgpu",
        }
    }

    /// The PCI functions a VM gets with this device (the GPU and its companions, the VF),
    /// empty for mdevs and wgpu shares.
    pub fn pci_functions(&self) -> Vec<PciAddress> {
        match &self.kind {
            DraKind::Gpu {
                address,
                companions,
            } => std::iter::once(*address)
                .chain(companions.iter().copied())
                .collect(),
            DraKind::Vf { vf, .. } | DraKind::NvidiaVgpu { vf, .. } => vec![*vf],
            DraKind::Mdev { .. } | DraKind::Wgpu { .. } => Vec::new(),
        }
    }
}

/// Kubernetes' standard attribute for a device's PCI address (KubeVirt reads it to build
/// the VM's host device).
pub const PCI_BUS_ID: &str = "resource.kubernetes.io/pciBusID";

/// The longest DNS label.
const LABEL_MAX: usize = 63;

/// `s` as a DNS label part: lowercase alphanumerics and `-`, runs of anything else as one
/// `-`, no `-` at either end.
pub fn label_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// A DNS label made of `parts` joined with `-`; one longer than 63 characters keeps its
/// head and ends in a hash of the whole, so two long names stay distinct.
pub fn device_name(parts: &[&str]) -> String {
    let whole = parts
        .iter()
        .map(|p| label_part(p))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if whole.len() <= LABEL_MAX {
        return whole;
    }
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let hash = whole.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let tail = format!("-{:08x}", hash as u32);
    let head = whole[..LABEL_MAX - tail.len()].trim_end_matches('-');
    format!("{head}{tail}")
}

fn addr_label(a: &PciAddress) -> String {
    label_part(&a.to_string())
}

fn s(v: impl Into<String>) -> Attr {
    let mut v: String = v.into();
    // resource.k8s.io caps string attributes at 64 bytes.
    while v.len() > 64 {
        v.pop();
    }
    Attr::String(v)
}

/// The attributes of a PCI function: ids, names, address, IOMMU group, NUMA node.
fn pci_attributes(
    inv: &HostInventory,
    addr: &PciAddress,
    attrs: &mut BTreeMap<String, Attr>,
    capacity: &mut BTreeMap<String, u64>,
) {
    attrs.insert(PCI_BUS_ID.into(), s(addr.to_string()));
    attrs.insert("pciAddress".into(), s(addr.to_string()));
    let Some(f) = inv.functions.iter().find(|f| f.address == *addr) else {
        return;
    };
    if let Some(v) = f.vendor_id {
        attrs.insert("vendorID".into(), s(format!("{v:04x}")));
    }
    if let Some(d) = f.device_id {
        attrs.insert("deviceID".into(), s(format!("{d:04x}")));
    }
    if let Some(n) = &f.vendor_name {
        attrs.insert("vendor".into(), s(n.clone()));
    }
    if let Some(n) = &f.device_name {
        attrs.insert("model".into(), s(n.clone()));
    }
    if let Some(g) = f.iommu_group {
        attrs.insert("iommuGroup".into(), Attr::Int(i64::from(g)));
    }
    if let Some(n) = f.numa_node {
        attrs.insert("numaNode".into(), Attr::Int(i64::from(n)));
    }
    if let Some(v) = &f.vram {
        capacity.insert("memory".into(), v.bytes);
    }
}

/// The node's DRA devices: every available candidate of the three rungs (`candidates`, as
/// the rungs' probes give them on `inv`), `wgpu_shares` shares of the software rung when
/// an adapter is available, and every device in `held` (prepared for a claim now, so no
/// longer "available", but still the node's). mdev slots number `available_instances`
/// plus the slots held, so a prepared slot keeps its name.
pub fn devices(
    inv: &HostInventory,
    candidates: &[Candidate],
    wgpu_shares: u32,
    held: &[DraDevice],
) -> Vec<DraDevice> {
    let mut out: Vec<DraDevice> = held.to_vec();
    let mut names: BTreeSet<String> = held.iter().map(|d| d.name.clone()).collect();
    let mut push = |d: DraDevice, out: &mut Vec<DraDevice>| {
        if names.insert(d.name.clone()) {
            out.push(d);
        }
    };
    let mut wgpu = false;
    for c in candidates.iter().filter(|c| c.is_available()) {
        let mut attributes = BTreeMap::new();
        let mut capacity = BTreeMap::new();
        match &c.target {
            Target::Gpu {
                address,
                companions,
            } => {
                pci_attributes(inv, address, &mut attributes, &mut capacity);
                attributes.insert("companions".into(), Attr::Int(companions.len() as i64));
                let d = DraDevice {
                    name: device_name(&["gpu", &addr_label(address)]),
                    kind: DraKind::Gpu {
                        address: *address,
                        companions: companions.clone(),
                    },
                    attributes,
                    capacity,
                };
                push(with_rung(d), &mut out);
            }
            Target::SriovVf { pf, vf } => {
                pci_attributes(inv, vf, &mut attributes, &mut capacity);
                attributes.insert("physfn".into(), s(pf.to_string()));
                let d = DraDevice {
                    name: device_name(&["vf", &addr_label(vf)]),
                    kind: DraKind::Vf { pf: *pf, vf: *vf },
                    attributes,
                    capacity,
                };
                push(with_rung(d), &mut out);
            }
            Target::MdevType {
                parent,
                type_id,
                type_name,
                available_instances,
            } => {
                let held_here = held
                    .iter()
                    .filter(|h| matches!(&h.kind, DraKind::Mdev { parent: p, type_id: t, .. } if p == parent && t == type_id))
                    .count() as u32;
                if let Ok(pa) = parent.parse::<PciAddress>() {
                    pci_attributes(inv, &pa, &mut attributes, &mut capacity);
                    // The VM gets an mdev, not the parent: no PCI address of its own.
                    attributes.remove(PCI_BUS_ID);
                    attributes.remove("pciAddress");
                    attributes.remove("iommuGroup");
                    capacity.clear();
                }
                attributes.insert("mdevParent".into(), s(parent.clone()));
                attributes.insert("mdevType".into(), s(type_id.clone()));
                if let Some(n) = type_name {
                    attributes.insert("mdevTypeName".into(), s(n.clone()));
                }
                for slot in 0..available_instances.saturating_add(held_here) {
                    let d = DraDevice {
                        name: device_name(&["mdev", parent, type_id, &slot.to_string()]),
                        kind: DraKind::Mdev {
                            parent: parent.clone(),
                            type_id: type_id.clone(),
                            slot,
                        },
                        attributes: attributes.clone(),
                        capacity: capacity.clone(),
                    };
                    push(with_rung(d), &mut out);
                }
            }
            Target::NvidiaVgpu {
                vf,
                type_id,
                type_name,
            } => {
                pci_attributes(inv, vf, &mut attributes, &mut capacity);
                attributes.insert("vgpuType".into(), Attr::Int(i64::from(*type_id)));
                attributes.insert("vgpuTypeName".into(), s(type_name.clone()));
                let d = DraDevice {
                    name: device_name(&["vgpu", &addr_label(vf), &type_id.to_string()]),
                    kind: DraKind::NvidiaVgpu {
                        vf: *vf,
                        type_id: *type_id,
                    },
                    attributes,
                    capacity,
                };
                push(with_rung(d), &mut out);
            }
            Target::Adapter { .. } => wgpu = true,
            Target::SriovPf { .. } | Target::Nothing => {}
        }
    }
    if wgpu {
        let adapter = candidates.iter().find_map(|c| match &c.target {
            Target::Adapter { info } if c.is_available() => Some(info.clone()),
            _ => None,
        });
        for share in 0..wgpu_shares {
            let mut attributes = BTreeMap::new();
            if let Some(info) = &adapter {
                attributes.insert("adapter".into(), s(info.name.clone()));
                attributes.insert("adapterBackend".into(), s(info.backend.clone()));
            }
            let d = DraDevice {
                name: format!("wgpu-{share}"),
                kind: DraKind::Wgpu { share },
                attributes,
                capacity: BTreeMap::new(),
            };
            push(with_rung(d), &mut out);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn with_rung(mut d: DraDevice) -> DraDevice {
    d.attributes.insert("rung".into(), s(d.rung()));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(device_name(&["gpu", "0000:86:00.0"]), "gpu-0000-86-00-0");
        assert_eq!(
            device_name(&["mdev", "0000:00:02.0", "i915-GVTg_V5_4", "1"]),
            "mdev-0000-00-02-0-i915-gvtg-v5-4-1"
        );
        let long = "x".repeat(100);
        let a = device_name(&["mdev", &long, "a"]);
        let b = device_name(&["mdev", &long, "b"]);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn string_attributes_fit_64_bytes() {
        match s("y".repeat(80)) {
            Attr::String(v) => assert_eq!(v.len(), 64),
            other => panic!("{other:?}"),
        }
    }
}
