//! The passthrough rung: a whole GPU on `vfio-pci`.

use vm_device_host::PciAddress;

use crate::inventory::{Gpu, HostInventory, IommuKind};
use crate::ladder::reasons::{device_not_found, iommu_off};
use crate::ladder::{attr_evidence, Filter};
use crate::ladder::{Candidate, GpuMode, Reason, ReasonCode, Target};

const MODE: GpuMode = GpuMode::Passthrough;

pub use crate::rungs::passthrough::group::VFIO_SAFE_DRIVERS;
use crate::rungs::passthrough::group::{
    classify, Blocker, GroupClassification, MemberFacts, IN_USE,
};
use crate::rungs::passthrough::held_open;
use vm_device_host::ProcessHolder;

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
/// IOMMU (or a group) nothing else can be judged; then the boot display, active mediated
/// devices, enabled VFs, a group shared with devices the host uses, and host processes
/// holding the device nodes of what would move (unbinding would hang on them, so
/// `gpu prepare` refuses; the ladder must not choose it either).
fn refusals(inv: &HostInventory, gpu: &Gpu, filter: &Filter) -> Vec<Reason> {
    let addr = gpu.address;
    let Some(f) = inv.function(&addr) else {
        return Vec::new();
    };
    if !inv.host.iommu.enabled {
        return vec![iommu_off(&inv.host)];
    }
    let Some(group) = f.iommu_group else {
        return vec![Reason::new(
            ReasonCode::NoIommuGroup,
            format!("{addr} has no IOMMU group although the IOMMU is on"),
        )
        .evidence(format!(
            "/sys/bus/pci/devices/{addr}/iommu_group is missing"
        ))
        .remedy(match inv.host.iommu.kind {
            Some(IommuKind::AmdVi) => {
                "check `dmesg | grep -i AMD-Vi` for devices the IOMMU does not cover"
            }
            _ => "check `dmesg | grep -i DMAR` for devices the IOMMU does not cover",
        })];
    };
    let mut out = Vec::new();
    if f.boot_vga == Some(true) && !filter.allow_boot_vga {
        out.push(
            Reason::new(
                ReasonCode::BootDisplay,
                format!("{addr} is the boot display: the host would lose its console"),
            )
            .evidence(attr_evidence(&addr, "boot_vga", "1"))
            .remedy("use another GPU, or pass --allow-boot-vga if the host can run without a local display"),
        );
    }
    if let Some(p) = inv.mdev_parent(&addr) {
        if p.active_count() > 0 {
            let uuids: Vec<String> = p.types.iter().flat_map(|t| t.devices.clone()).collect();
            out.push(
                Reason::new(
                    ReasonCode::ActiveMdevs,
                    format!("{addr} parents {} active mediated device(s)", uuids.len()),
                )
                .evidence(format!("/sys/bus/mdev/devices: {}", uuids.join(", ")))
                .remedy("stop the VMs using them and remove them (`vm-cli gpu release`, or `mdevctl stop --uuid UUID`)"),
            );
        }
    }
    if let Some(s) = &f.sriov {
        if s.num_vfs > 0 {
            out.push(
                Reason::new(
                    ReasonCode::VfsEnabled,
                    format!(
                        "{addr} has {} SR-IOV virtual function(s) enabled",
                        s.num_vfs
                    ),
                )
                .evidence(attr_evidence(&addr, "sriov_numvfs", &s.num_vfs.to_string()))
                .remedy(format!(
                    "echo 0 | sudo tee /sys/bus/pci/devices/{addr}/sriov_numvfs"
                )),
            );
        }
    }
    let class = classify_group(inv, group, gpu, filter.allow_boot_vga);
    let blockers = describe_blockers(class.blockers.clone());
    if !blockers.is_empty() {
        let list: Vec<String> = blockers
            .iter()
            .map(|(a, name, drv)| format!("{a} ({name}) on {drv}"))
            .collect();
        out.push(
            Reason::new(
                ReasonCode::GroupNotViable,
                format!(
                    "IOMMU group {group} also holds devices the host is using (VFIO takes every endpoint of a group): {}",
                    list.join("; ")
                ),
            )
            .evidence(format!("/sys/kernel/iommu_groups/{group}/devices"))
            .remedy("move the GPU to a slot with its own IOMMU group (a CPU-attached slot, or a board with ACS), or stop using those devices on the host"),
        );
    }
    let held: Vec<&ProcessHolder> = class
        .moved
        .iter()
        .filter_map(|(a, _)| inv.function(a))
        .flat_map(|m| inv.holders_of(m))
        .collect();
    if !held.is_empty() {
        out.push(held_open(&held));
    }
    out
}

/// Members of `group` that keep `gpu` from being passed through, as `gpu prepare` decides
/// (`gpu_passthrough::group`): endpoints on host drivers other than the GPU, its companions,
/// and other GPUs of the group that can move with it: `(address, name, driver)`.
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
    describe_blockers(classify_group(inv, group, gpu, allow_boot_vga).blockers)
}

/// How `gpu prepare` would treat each member of `gpu`'s group.
fn classify_group(
    inv: &HostInventory,
    group: u32,
    gpu: &Gpu,
    allow_boot_vga: bool,
) -> GroupClassification {
    let Some(g) = inv.groups.get(&group) else {
        return GroupClassification::default();
    };
    let facts: Vec<MemberFacts> = g
        .members
        .iter()
        .filter_map(|m| inv.function(m))
        .map(|f| MemberFacts {
            address: f.address,
            class: f.class,
            driver: f.driver.clone(),
            boot_vga: f.boot_vga == Some(true),
            active_mdevs: inv.mdev_parent(&f.address).map_or(0, |p| p.active_count()),
            vfs: f.sriov.as_ref().map_or(0, |s| s.num_vfs),
            label: f.display_name(),
        })
        .collect();
    classify(gpu.address, &facts, allow_boot_vga)
}

fn describe_blockers(blockers: Vec<Blocker>) -> Vec<(PciAddress, String, String)> {
    blockers
        .into_iter()
        .map(|b| {
            // The plain "in use by the host" is what the messages around the list say already.
            let drv = match (b.driver, b.why == IN_USE) {
                (Some(d), true) => d,
                (Some(d), false) => format!("{d} ({})", b.why),
                (None, _) => format!("no driver ({})", b.why),
            };
            (b.address, b.label, drv)
        })
        .collect()
}
