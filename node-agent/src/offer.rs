//! What the node offers kubelet, computed from one host inventory: resources, their
//! devices, health, NUMA node and IOMMU group. Pure: no host access.

use std::collections::{BTreeMap, BTreeSet};

use vm_device::inventory::{HostInventory, PciFunction};
use vm_passthrough::PciAddress;

use crate::config::DOMAIN;

/// kubelet's health values (deviceplugin/v1beta1 constants.go).
pub const HEALTHY: &str = "Healthy";
/// See [`HEALTHY`].
pub const UNHEALTHY: &str = "Unhealthy";

/// What one offered device is on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    /// A PCI function handed over whole (a GPU, or an SR-IOV virtual function), on vfio-pci.
    Pci {
        /// Its address.
        address: PciAddress,
    },
    /// A mediated device (mdev) created by the agent.
    Mdev {
        /// Its UUID.
        uuid: String,
        /// Its parent (PCI address or mdev_bus name).
        parent: String,
    },
    /// One share of the software (wgpu) rung.
    WgpuShare {
        /// Share number.
        index: u32,
    },
}

/// What the agent put in place at start (prepared GPUs, created mdevs, wgpu shares) under
/// the resource each is offered as. The devices of a resource never change after start;
/// their health does (and a device gone from the host is dropped from the list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Resource name → devices.
    pub resources: BTreeMap<String, Vec<DeviceKind>>,
}

/// One device as kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The device id given to kubelet (a PCI address, an mdev UUID, `wgpu-N`).
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// Healthy (still there, still on vfio-pci).
    pub healthy: bool,
    /// Its NUMA node, when the host says.
    pub numa_node: Option<u32>,
    /// Its IOMMU group (`/dev/vfio/N`), when it has one.
    pub iommu_group: Option<u32>,
}

/// Resource name → its devices, as offered now.
pub type Snapshot = BTreeMap<String, Vec<Offered>>;

/// A resource-name part: what Kubernetes accepts in an extended resource name
/// (`[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]`, at most 63 characters); anything else
/// becomes `_`.
pub fn name_part(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(63);
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unnamed".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `vm-device.io/<vendor>-<device>` (lowercase hex ids) of a PCI function.
pub fn pci_resource(vendor: u16, device: u16) -> String {
    format!("{DOMAIN}/{vendor:04x}-{device:04x}")
}

/// `vm-device.io/<type>` of an mdev or vGPU type.
pub fn mdev_resource(type_id: &str) -> String {
    format!("{DOMAIN}/{}", name_part(type_id))
}

/// `vm-device.io/wgpu`.
pub fn wgpu_resource() -> String {
    format!("{DOMAIN}/wgpu")
}

/// The environment variable KubeVirt reads a resource's devices from: `PREFIX_` and the
/// resource name upper-cased with `/` and `.` as `_`, exactly as KubeVirt's
/// `ResourceNameToEnvVar` builds it (it leaves `-` alone, so `vm-device.io/10de-1eb8` is
/// `PCI_RESOURCE_VM-DEVICE_IO_10DE-1EB8`).
pub fn kubevirt_env(prefix: &str, resource: &str) -> String {
    let name = resource.to_uppercase().replace(['/', '.'], "_");
    format!("{prefix}_{name}")
}

/// KubeVirt's prefix for PCI (passthrough, VF) resources.
pub const PCI_PREFIX: &str = "PCI_RESOURCE";
/// KubeVirt's prefix for mediated-device resources.
pub const MDEV_PREFIX: &str = "MDEV_PCI_RESOURCE";

/// The driver a handed-over PCI function must stay on.
pub const VFIO_PCI: &str = "vfio-pci";

/// What the agent offers now, given what it owns and the host as scanned.
pub fn snapshot(owned: &Owned, inv: &HostInventory) -> Snapshot {
    build(owned, &inv.functions, Some(inv))
}

/// True when what `owned` offers can be judged from its own PCI functions alone (no mdev,
/// whose health and NUMA node come from a scan of the mdev bus and its parents).
pub fn pci_only(owned: &Owned) -> bool {
    owned
        .resources
        .values()
        .flatten()
        .all(|k| !matches!(k, DeviceKind::Mdev { .. }))
}

/// The PCI functions among `owned`'s devices (GPUs and VFs handed to kubelet).
pub fn pci_addresses(owned: &Owned) -> std::collections::BTreeSet<PciAddress> {
    owned
        .resources
        .values()
        .flatten()
        .filter_map(|k| match k {
            DeviceKind::Pci { address } => Some(*address),
            _ => None,
        })
        .collect()
}

/// [`snapshot`] from the owned PCI functions as read one by one (`functions`: those still
/// on the host), for an owner that is [`pci_only`]; `None` otherwise.
pub fn snapshot_of_functions(owned: &Owned, functions: &[PciFunction]) -> Option<Snapshot> {
    pci_only(owned).then(|| build(owned, functions, None))
}

fn build(owned: &Owned, functions: &[PciFunction], inv: Option<&HostInventory>) -> Snapshot {
    let mut out = Snapshot::new();
    for (resource, devices) in &owned.resources {
        let mut list = Vec::new();
        for kind in devices {
            let offered = match kind {
                DeviceKind::Pci { address } => {
                    let Some(f) = functions.iter().find(|f| f.address == *address) else {
                        continue; // gone from the host
                    };
                    Offered {
                        id: address.to_string(),
                        kind: kind.clone(),
                        healthy: f.driver.as_deref() == Some(VFIO_PCI),
                        numa_node: f.numa_node,
                        iommu_group: f.iommu_group,
                    }
                }
                DeviceKind::Mdev { uuid, parent } => {
                    let Some(inv) = inv else {
                        continue; // not built without a scan (see `pci_only`)
                    };
                    let Some(m) = inv.mdev_devices.iter().find(|m| m.uuid == *uuid) else {
                        continue;
                    };
                    Offered {
                        id: uuid.clone(),
                        kind: kind.clone(),
                        healthy: m.iommu_group.is_some(),
                        numa_node: parent_numa(inv, parent),
                        iommu_group: m.iommu_group,
                    }
                }
                DeviceKind::WgpuShare { index } => Offered {
                    id: format!("wgpu-{index}"),
                    kind: kind.clone(),
                    healthy: true,
                    numa_node: None,
                    iommu_group: None,
                },
            };
            list.push(offered);
        }
        out.insert(resource.clone(), list);
    }
    out
}

fn parent_numa(inv: &HostInventory, parent: &str) -> Option<u32> {
    let addr: PciAddress = parent.parse().ok()?;
    inv.functions
        .iter()
        .find(|f| f.address == addr)
        .and_then(|f| f.numa_node)
}

/// kubelet's `GetPreferredAllocation` for one container: `size` devices out of
/// `available`, with every one of `must` and, where the devices allow, all on one NUMA
/// node and whole IOMMU groups (a group's devices go to one VM together). Unknown ids are
/// ignored; fewer than `size` are returned when fewer are available.
pub fn preferred(
    devices: &[Offered],
    available: &[String],
    must: &[String],
    size: usize,
) -> Vec<String> {
    let by_id: BTreeMap<&str, &Offered> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut chosen: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for id in must {
        if by_id.contains_key(id.as_str()) && seen.insert(id.clone()) {
            chosen.push(id.clone());
        }
    }
    let pool: Vec<&Offered> = available
        .iter()
        .filter(|id| !seen.contains(*id))
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    if chosen.len() >= size {
        return chosen;
    }
    // NUMA node: the one the must-include devices are on, else the one with the most
    // available devices (ties: lowest node).
    let must_node = chosen
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).and_then(|d| d.numa_node))
        .next();
    let node = must_node.or_else(|| {
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for d in &pool {
            if let Some(n) = d.numa_node {
                *count.entry(n).or_default() += 1;
            }
        }
        count
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| *n)
    });
    // Groups of the pool: devices of the must-include groups first, then groups on the
    // chosen node, then the rest; within each, whole groups that fit before partial ones.
    let must_groups: BTreeSet<u32> = chosen
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).and_then(|d| d.iommu_group))
        .collect();
    let mut groups: BTreeMap<Option<u32>, Vec<&Offered>> = BTreeMap::new();
    let mut singles = Vec::new();
    for d in &pool {
        match d.iommu_group {
            Some(g) => groups.entry(Some(g)).or_default().push(d),
            None => singles.push(vec![*d]),
        }
    }
    let mut units: Vec<Vec<&Offered>> = groups.into_values().collect();
    units.extend(singles);
    let rank = |u: &Vec<&Offered>| {
        let in_must = u
            .iter()
            .any(|d| d.iommu_group.is_some_and(|g| must_groups.contains(&g)));
        let on_node = node.is_some() && u.iter().all(|d| d.numa_node == node);
        (!in_must, !on_node)
    };
    units.sort_by_key(|u| rank(u));
    let need = size - chosen.len();
    let mut left = need;
    let mut taken: Vec<&Offered> = Vec::new();
    let mut partial: Vec<&Vec<&Offered>> = Vec::new();
    // First pass: whole groups that fit, in rank order.
    let mut used = vec![false; units.len()];
    for (i, u) in units.iter().enumerate() {
        if left == 0 {
            break;
        }
        if u.len() <= left {
            taken.extend(u.iter().copied());
            left -= u.len();
            used[i] = true;
        } else {
            partial.push(u);
        }
    }
    // Then parts of groups, when no whole group fits the rest.
    for u in partial {
        for d in u.iter() {
            if left == 0 {
                break;
            }
            taken.push(d);
            left -= 1;
        }
    }
    chosen.extend(taken.into_iter().map(|d| d.id.clone()));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, numa: Option<u32>, group: Option<u32>) -> Offered {
        Offered {
            id: id.into(),
            kind: DeviceKind::WgpuShare { index: 0 },
            healthy: true,
            numa_node: numa,
            iommu_group: group,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_names_are_kubevirts() {
        assert_eq!(
            kubevirt_env(PCI_PREFIX, "vm-device.io/10de-1eb8"),
            "PCI_RESOURCE_VM-DEVICE_IO_10DE-1EB8"
        );
        assert_eq!(
            kubevirt_env(MDEV_PREFIX, "vm-device.io/nvidia-222"),
            "MDEV_PCI_RESOURCE_VM-DEVICE_IO_NVIDIA-222"
        );
    }

    #[test]
    fn resource_names_are_valid_kubernetes_names() {
        assert_eq!(
            mdev_resource("i915-GVTg_V5_4"),
            "vm-device.io/i915-GVTg_V5_4"
        );
        assert_eq!(mdev_resource("GRID T4-1Q"), "vm-device.io/GRID_T4-1Q");
        assert_eq!(mdev_resource("/"), "vm-device.io/unnamed");
        assert_eq!(pci_resource(0x10de, 0x1eb8), "vm-device.io/10de-1eb8");
        assert!(mdev_resource(&"x".repeat(100)).len() <= DOMAIN.len() + 1 + 63);
    }

    #[test]
    fn preferred_stays_on_one_numa_node() {
        let devs = [
            dev("a", Some(0), Some(1)),
            dev("b", Some(1), Some(2)),
            dev("c", Some(1), Some(3)),
            dev("d", Some(0), Some(4)),
        ];
        // b is a must: its node (1) supplies the rest.
        let got = preferred(&devs, &ids(&["a", "b", "c", "d"]), &ids(&["b"]), 2);
        assert_eq!(got, ids(&["b", "c"]));
        // No must: the node with most devices left (tie: lowest) is used.
        let got = preferred(&devs, &ids(&["a", "b", "c", "d"]), &[], 2);
        assert_eq!(got, ids(&["a", "d"]));
        // Too few on one node: spill over, the node's own first.
        let got = preferred(&devs, &ids(&["a", "b", "c"]), &[], 3);
        assert_eq!(got.len(), 3);
        assert_eq!(&got[..2], &ids(&["b", "c"])[..]);
    }

    #[test]
    fn preferred_takes_whole_iommu_groups() {
        let devs = [
            dev("x1", Some(0), Some(7)),
            dev("y1", Some(0), Some(8)),
            dev("y2", Some(0), Some(8)),
            dev("z1", Some(0), Some(9)),
        ];
        // Two wanted: x1 and z1 (whole groups), not half of group 8.
        let got = preferred(&devs, &ids(&["x1", "y1", "y2", "z1"]), &[], 2);
        assert_eq!(got, ids(&["x1", "z1"]));
        // Must include y1: its group-mate y2 comes with it.
        let got = preferred(&devs, &ids(&["x1", "y1", "y2", "z1"]), &ids(&["y1"]), 2);
        assert_eq!(got, ids(&["y1", "y2"]));
        // Unknown ids are ignored, and fewer than asked come back when fewer exist.
        let got = preferred(&devs, &ids(&["nope", "x1"]), &[], 3);
        assert_eq!(got, ids(&["x1"]));
    }
}
