//! The passthrough rung's probe: a whole GPU on `vfio-pci`, judged by [`super::rules`] on
//! facts taken from the inventory.

use vm_device_host::PciAddress;

use crate::inventory::{Gpu, HostInventory};
use crate::ladder::reasons::{device_not_found, iommu_off};
use crate::ladder::Filter;
use crate::ladder::{Candidate, GpuMode, Reason, ReasonCode, Target};

use super::rules::{self, DeviceFacts, PassthroughFacts};

const MODE: GpuMode = GpuMode::Passthrough;

/// Passthrough candidates: one per physical GPU (VFs belong to the mediated rung).
pub fn probe(inv: &HostInventory, filter: &Filter) -> Vec<Candidate> {
    let gpus: Vec<&Gpu> = inv
        .gpus
        .iter()
        .filter(|g| inv.function(&g.address).is_some_and(|f| f.physfn.is_none()))
        .collect();
    if let Some(dev) = filter.device {
        return match gpus.iter().find(|g| g.address == dev) {
            Some(g) => vec![gpu_candidate(inv, g, filter)],
            None => vec![Candidate::nothing(MODE, device_not_found(inv, &dev))],
        };
    }
    if gpus.is_empty() {
        return vec![Candidate::nothing(
            MODE,
            Reason::new(
                ReasonCode::NoGpu,
                "no display-class PCI function (class 0x03xxxx) on this host",
            )
            .evidence("/sys/bus/pci/devices/*/class"),
        )];
    }
    gpus.into_iter()
        .map(|g| gpu_candidate(inv, g, filter))
        .collect()
}

fn gpu_candidate(inv: &HostInventory, gpu: &Gpu, filter: &Filter) -> Candidate {
    let target = Target::Gpu {
        address: gpu.address,
        companions: gpu.companions.clone(),
    };
    Candidate::with_reasons(MODE, target, refusals(inv, gpu, filter))
}

/// Every reason `gpu` cannot be passed through, the one to fix first first: without an
/// IOMMU (or a group) nothing else can be judged; the rest is [`rules::judge`]'s.
fn refusals(inv: &HostInventory, gpu: &Gpu, filter: &Filter) -> Vec<Reason> {
    let addr = gpu.address;
    if inv.function(&addr).is_none() {
        return Vec::new();
    }
    if !inv.host.iommu.enabled {
        return vec![iommu_off(&inv.host)];
    }
    match facts(inv, &addr) {
        Some(f) => rules::judge(&f, filter.allow_boot_vga).reasons,
        None => vec![rules::no_iommu_group(&addr, inv.host.iommu.kind)],
    }
}

/// The rules' facts about `gpu` from the inventory: its group's members with their drivers,
/// mediated devices, VFs and device nodes, and the holders the scan found. `None` when the
/// function has no IOMMU group.
pub fn facts(inv: &HostInventory, gpu: &PciAddress) -> Option<PassthroughFacts> {
    let group = inv.function(gpu)?.iommu_group?;
    let mut addrs: Vec<PciAddress> = inv
        .groups
        .get(&group)
        .map(|g| g.members.clone())
        .unwrap_or_default();
    if !addrs.contains(gpu) {
        addrs.push(*gpu);
    }
    let members = addrs
        .iter()
        .filter_map(|m| inv.function(m))
        .map(|f| DeviceFacts {
            address: f.address,
            class: f.class,
            driver: f.driver.clone(),
            boot_vga: f.boot_vga == Some(true),
            mdevs: inv
                .mdev_parent(&f.address)
                .map(|p| p.types.iter().flat_map(|t| t.devices.clone()).collect())
                .unwrap_or_default(),
            vfs: f.sriov.as_ref().map_or(0, |s| s.num_vfs),
            name: f.display_name(),
            device_nodes: f.device_nodes.clone(),
        })
        .collect();
    Some(PassthroughFacts {
        gpu: *gpu,
        group,
        members,
        holders: inv.holders.clone(),
    })
}

/// Members of `group` that keep `gpu` from being passed through, as [`rules::classify`]
/// decides: endpoints on host drivers other than the GPU, its companions, and other GPUs of
/// the group that can move with it: `(address, name, driver)`.
pub fn group_blockers(
    inv: &HostInventory,
    group: u32,
    gpu: &Gpu,
) -> Vec<(PciAddress, String, String)> {
    group_blockers_with(inv, group, gpu, false)
}

/// As [`group_blockers`], with `--allow-boot-vga` deciding whether a boot display sharing
/// the group may move too.
pub fn group_blockers_with(
    inv: &HostInventory,
    group: u32,
    gpu: &Gpu,
    allow_boot_vga: bool,
) -> Vec<(PciAddress, String, String)> {
    let Some(f) = facts(inv, &gpu.address).filter(|f| f.group == group) else {
        return Vec::new();
    };
    rules::classify(gpu.address, &f.members, allow_boot_vga)
        .blockers
        .into_iter()
        .map(|b| {
            let drv = b.driver_text();
            (b.address, b.name, drv)
        })
        .collect()
}
