//! Per-GPU passthrough checks: IOMMU group, boot display, reset method, bound driver,
//! processes holding the GPU's device nodes, and access to `/dev/vfio/N`.

use std::path::{Path, PathBuf};

use vm_device_host::{PciAddress, ProcessHolder};

use super::remedy::{self, FIX_VFIO_PERMISSIONS};
use super::{Check, Options, Status};
use crate::host::HostOps;
use crate::inventory::{Gpu, HostInventory, PciFunction};
use crate::ladder::{Candidate, GpuMode, ReasonCode, Target};
use crate::rungs::passthrough::probe::{group_blockers, VFIO_SAFE_DRIVERS};

const PT: Option<GpuMode> = Some(GpuMode::Passthrough);

/// AMD GPU families whose reset is known to leave the card unusable for a second VM start
/// (no working FLR/BACO): Polaris, Vega 10/20, Navi 10/12/14. The fix is the vendor-reset
/// module (gnif/vendor-reset). Ranges of PCI device ids, by family.
const AMD_RESET_BUG: [(u16, u16, &str); 7] = [
    (0x67c0, 0x67ff, "Polaris 10/11"),
    (0x6980, 0x699f, "Polaris 12"),
    (0x6860, 0x687f, "Vega 10"),
    (0x66a0, 0x66af, "Vega 20"),
    (0x7310, 0x731f, "Navi 10"),
    (0x7340, 0x734f, "Navi 14"),
    (0x7360, 0x736f, "Navi 12"),
];

/// The AMD family with the reset bug, when `f` is one.
pub(super) fn amd_reset_bug(f: &PciFunction) -> Option<&'static str> {
    if f.vendor_id != Some(0x1002) {
        return None;
    }
    let d = f.device_id?;
    AMD_RESET_BUG
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&d))
        .map(|(_, _, name)| *name)
}

/// `driver_override` + unbind + `drivers_probe`: what binds `addr` to vfio-pci.
fn rebind_line(addr: &PciAddress) -> String {
    format!(
        "echo vfio-pci | sudo tee /sys/bus/pci/devices/{addr}/driver_override && echo {addr} | sudo tee /sys/bus/pci/devices/{addr}/driver/unbind && echo {addr} | sudo tee /sys/bus/pci/drivers_probe"
    )
}

pub(super) fn gpu_checks(
    host: &dyn HostOps,
    inv: &HostInventory,
    candidates: &[Candidate],
    opts: &Options,
    out: &mut Vec<Check>,
) {
    // The rung's own "nothing here" (no GPU, --gpu-device not a GPU), reused as it is.
    for c in candidates
        .iter()
        .filter(|c| c.mode == GpuMode::Passthrough && matches!(c.target, Target::Nothing))
    {
        if let Some(r) = c.reason() {
            let mut ch = Check::new("passthrough.gpus", PT, Status::Fail, r.message.clone())
                .remedy(remedy::from_reason(r).unwrap_or_else(|| {
                    "# nothing to pass through here: the wgpu rung can still render (on the CPU without a GPU)\nvm-cli gpu list".into()
                }));
            ch.evidence = r.evidence.clone();
            out.push(ch);
        }
    }
    let gpus: Vec<&Gpu> = inv
        .gpus
        .iter()
        .filter(|g| opts.device.is_none_or(|d| d == g.address))
        .filter(|g| inv.function(&g.address).is_some_and(|f| f.physfn.is_none()))
        .collect();
    // The holders were found with the inventory, before any adapter probe or NVML query
    // opened a node in this process (which never counts as a holder anyway).
    let holders = match &inv.holders_error {
        Some(e) => Err(e.clone()),
        None => Ok(inv.holders.clone()),
    };
    for g in gpus {
        let Some(f) = inv.function(&g.address) else {
            continue;
        };
        let a = g.address;
        out.push(group(inv, g, f));
        out.push(boot_display(f));
        out.push(reset(f));
        out.push(driver(inv, g, f));
        out.push(holders_check(f, &f.device_nodes, &holders));
        if let Some(c) = vfio_access(host, inv, f) {
            out.push(c);
        }
        out.extend(other_refusals(candidates, &a));
    }
}

/// The passthrough probe's refusals that the checks above do not cover (virtual functions
/// enabled, active mediated devices), reused as they are: every one, not only the first.
fn other_refusals(candidates: &[Candidate], a: &PciAddress) -> Vec<Check> {
    let Some(c) = candidates
        .iter()
        .filter(|c| c.mode == GpuMode::Passthrough)
        .find(|c| matches!(&c.target, Target::Gpu { address, .. } if address == a))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in c.reasons() {
        let what = match r.code {
            ReasonCode::VfsEnabled => "sriov",
            ReasonCode::ActiveMdevs => "active_mdevs",
            ReasonCode::IommuDisabled
            | ReasonCode::NoIommuGroup
            | ReasonCode::GroupNotViable
            | ReasonCode::BootDisplay
            | ReasonCode::HeldOpen => continue,
            _ => "passthrough",
        };
        let mut ch = Check::new(id(a, what), PT, Status::Fail, r.message.clone())
            .device(a.to_string())
            .remedy(
                remedy::from_reason(r)
                    .unwrap_or_else(|| format!("# see what holds {a}:\nvm-cli gpu list")),
            );
        ch.evidence = r.evidence.clone();
        out.push(ch);
    }
    out
}

fn id(addr: &PciAddress, what: &str) -> String {
    format!("gpu.{addr}.{what}")
}

fn group(inv: &HostInventory, g: &Gpu, f: &PciFunction) -> Check {
    let a = g.address;
    let id = id(&a, "group");
    if !inv.host.iommu.enabled {
        return Check::new(
            id,
            PT,
            Status::Fail,
            format!("{a} has no IOMMU group: the IOMMU is off"),
        )
        .device(a.to_string())
        .evidence(format!("/sys/bus/pci/devices/{a}/iommu_group: absent"))
        .remedy("# turn the IOMMU on first: see iommu.enabled and iommu.kernel_params");
    }
    let Some(n) = f.iommu_group else {
        return Check::new(
            id,
            PT,
            Status::Fail,
            format!("{a} has no IOMMU group although the IOMMU is on"),
        )
        .device(a.to_string())
        .evidence(format!("/sys/bus/pci/devices/{a}/iommu_group: absent"))
        .remedy("# the IOMMU does not cover this device; look for it in:\ndmesg | grep -i -e DMAR -e AMD-Vi");
    };
    let members: Vec<String> = inv
        .groups
        .get(&n)
        .map(|grp| {
            grp.members
                .iter()
                .map(|m| {
                    let drv = inv
                        .function(m)
                        .and_then(|f| f.driver.clone())
                        .unwrap_or_else(|| "no driver".into());
                    format!("{m} ({drv})")
                })
                .collect()
        })
        .unwrap_or_default();
    let ev = format!(
        "/sys/kernel/iommu_groups/{n}/devices: {}",
        members.join(", ")
    );
    let blockers = group_blockers(inv, n, g);
    if blockers.is_empty() {
        return Check::new(
            id,
            PT,
            Status::Ok,
            format!(
                "IOMMU group {n} is viable ({} member{})",
                members.len(),
                if members.len() == 1 { "" } else { "s" }
            ),
        )
        .device(a.to_string())
        .evidence(ev);
    }
    let list: Vec<String> = blockers
        .iter()
        .map(|(b, name, drv)| format!("{b} ({name}) on {drv}"))
        .collect();
    let mut fix = vec![
        "# move the GPU to a slot with its own IOMMU group (a CPU-attached slot, or a board with ACS),".to_string(),
        "# or give these devices up on the host too (they go to vfio-pci):".to_string(),
    ];
    fix.extend(blockers.iter().map(|(b, _, _)| rebind_line(b)));
    Check::new(
        id,
        PT,
        Status::Fail,
        format!(
            "IOMMU group {n} also holds devices the host is using (VFIO takes every endpoint of a group): {}",
            list.join("; ")
        ),
    )
    .device(a.to_string())
    .evidence(ev)
    .remedy(fix.join("\n"))
}

fn boot_display(f: &PciFunction) -> Check {
    let a = f.address;
    let id = id(&a, "boot_display");
    let path = format!("/sys/bus/pci/devices/{a}/boot_vga");
    match f.boot_vga {
        Some(true) => Check::new(
            id,
            PT,
            Status::Fail,
            format!("{a} is the boot display: the host would lose its console"),
        )
        .evidence(format!("{path} = 1"))
        .remedy("# pass another GPU with --gpu-device, or add --allow-boot-vga when the host can run headless"),
        Some(false) => Check::new(id, PT, Status::Ok, "not the boot display")
            .evidence(format!("{path} = 0")),
        None => Check::new(id, PT, Status::Ok, "not the boot display")
            .evidence(format!("{path}: absent")),
    }
    .device(a.to_string())
}

fn reset(f: &PciFunction) -> Check {
    let a = f.address;
    let id = id(&a, "reset");
    let path = format!("/sys/bus/pci/devices/{a}/reset_method");
    let ev = match &f.reset_method {
        Some(m) => format!("{path} = {m}"),
        None => format!("{path}: absent"),
    };
    let methods: Vec<&str> = f
        .reset_method
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let c = if let Some(family) = amd_reset_bug(f) {
        if methods.contains(&"device_specific") {
            Check::new(
                id,
                PT,
                Status::Ok,
                format!("AMD {family}: device-specific reset (vendor-reset) is in use"),
            )
        } else {
            Check::new(
                id,
                PT,
                Status::Warn,
                format!("AMD {family} has the reset bug: a second VM start may find the GPU hung"),
            )
            .remedy(format!(
                "# install vendor-reset (https://github.com/gnif/vendor-reset, DKMS), then:\n{}\necho device_specific | sudo tee {path}",
                remedy::load_module("vendor_reset")
            ))
        }
    } else if methods.contains(&"flr") {
        Check::new(id, PT, Status::Ok, "function-level reset (FLR) available")
    } else if methods.is_empty() {
        Check::new(
            id,
            PT,
            Status::Warn,
            "no reset method: the GPU keeps its state between VM starts (known reset trouble)",
        )
        .remedy(format!(
            "# start each VM on a freshly booted host, or check the kernel's view with:\nls -l /sys/bus/pci/devices/{a}/reset"
        ))
    } else {
        Check::new(
            id,
            PT,
            Status::Warn,
            format!(
                "no FLR: reset by {} also resets other devices behind the same bridge",
                methods.join(", ")
            ),
        )
        .remedy(format!(
            "# keep the other devices behind this bridge off the host, or check them with:\nls /sys/bus/pci/devices/{a}/../"
        ))
    };
    c.device(a.to_string()).evidence(ev)
}

fn driver(inv: &HostInventory, g: &Gpu, f: &PciFunction) -> Check {
    let a = g.address;
    let fns: Vec<&PciFunction> = std::iter::once(f)
        .chain(g.companions.iter().filter_map(|c| inv.function(c)))
        .collect();
    let ev: Vec<String> = fns
        .iter()
        .map(|f| match &f.driver {
            Some(d) => format!("/sys/bus/pci/devices/{}/driver -> {d}", f.address),
            None => format!("/sys/bus/pci/devices/{}/driver: none", f.address),
        })
        .collect();
    let native: Vec<&&PciFunction> = fns
        .iter()
        .filter(|f| {
            f.driver
                .as_deref()
                .is_some_and(|d| !VFIO_SAFE_DRIVERS.contains(&d))
        })
        .collect();
    let mut c = if native.is_empty() {
        Check::new(
            id(&a, "driver"),
            PT,
            Status::Ok,
            match f.driver.as_deref() {
                Some(d) => format!("bound to {d}: ready for VFIO"),
                None => "no driver bound: vfio-pci can take it".to_string(),
            },
        )
    } else {
        let names: Vec<String> = native
            .iter()
            .map(|f| format!("{} on {}", f.address, f.driver.as_deref().unwrap_or("?")))
            .collect();
        let mut fix = vec![
            "# passthrough unbinds these from the host (the host stops using them):".to_string(),
        ];
        fix.extend(native.iter().map(|f| rebind_line(&f.address)));
        Check::new(
            id(&a, "driver"),
            PT,
            Status::Warn,
            format!("host drivers hold it: {}", names.join(", ")),
        )
        .remedy(fix.join("\n"))
    };
    c.evidence = ev;
    c.device(a.to_string())
}

fn holders_check(
    f: &PciFunction,
    nodes: &[PathBuf],
    holders: &Result<Vec<ProcessHolder>, String>,
) -> Check {
    let a = f.address;
    let id = id(&a, "holders");
    let shown: Vec<String> = nodes.iter().map(|n| n.display().to_string()).collect();
    if nodes.is_empty() {
        return Check::new(id, PT, Status::Ok, "no DRM or NVIDIA device nodes to hold")
            .device(a.to_string())
            .evidence(format!("/sys/bus/pci/devices/{a}/drm: no card or renderD"));
    }
    let ev = format!("open files of /proc/*/fd for {}", shown.join(", "));
    let holders = match holders {
        Ok(h) => h,
        Err(e) => {
            return Check::new(
                id,
                PT,
                Status::Warn,
                "cannot scan processes for open device nodes",
            )
            .device(a.to_string())
            .evidence(format!("{ev}: {e}"))
            .remedy(format!("sudo fuser -v {}", shown.join(" ")))
        }
    };
    let mine: Vec<&ProcessHolder> = holders.iter().filter(|h| nodes.contains(&h.path)).collect();
    if mine.is_empty() {
        return Check::new(id, PT, Status::Ok, "no process holds its device nodes")
            .device(a.to_string())
            .evidence(ev);
    }
    let list: Vec<String> = mine
        .iter()
        .map(|h| format!("{} (pid {}) holds {}", h.comm, h.pid, h.path.display()))
        .collect();
    let mut fix = Vec::new();
    if mine.iter().any(|h| h.comm == "nvidia-persistenced") {
        fix.push("sudo systemctl stop nvidia-persistenced".to_string());
    }
    const DISPLAY: [&str; 8] = [
        "Xorg",
        "Xwayland",
        "gnome-shell",
        "kwin_wayland",
        "sddm",
        "gdm",
        "lightdm",
        "sway",
    ];
    if mine.iter().any(|h| DISPLAY.contains(&h.comm.as_str())) {
        fix.push("sudo systemctl stop display-manager  # the graphical session on this GPU".into());
    }
    let rest: Vec<String> = mine
        .iter()
        .filter(|h| h.comm != "nvidia-persistenced" && !DISPLAY.contains(&h.comm.as_str()))
        .map(|h| h.pid.to_string())
        .collect();
    if !rest.is_empty() {
        fix.push("# close these programs, or stop them:".into());
        let mut pids = rest;
        pids.dedup();
        fix.push(format!("sudo kill -TERM {}", pids.join(" ")));
    }
    let mut c = Check::new(
        id,
        PT,
        Status::Fail,
        format!("unbinding would hang: {}", list.join("; ")),
    )
    .device(a.to_string())
    .evidence(ev)
    .remedy(fix.join("\n"));
    c.evidence.extend(list);
    c
}

fn vfio_access(host: &dyn HostOps, inv: &HostInventory, f: &PciFunction) -> Option<Check> {
    let a = f.address;
    let n = f.iommu_group.filter(|_| inv.host.iommu.enabled)?;
    let id = id(&a, "vfio_access");
    let node = PathBuf::from(format!("/dev/vfio/{n}"));
    let c = if host.exists(&node) {
        if host.access(&node, true) {
            Check::new(
                id,
                PT,
                Status::Ok,
                format!("/dev/vfio/{n} is usable by this user"),
            )
            .evidence(format!("/dev/vfio/{n}: access(R_OK|W_OK) ok"))
        } else {
            Check::new(
                id,
                PT,
                Status::Fail,
                format!("this user cannot open /dev/vfio/{n}"),
            )
            .evidence(format!("/dev/vfio/{n}: access(R_OK|W_OK) denied"))
            .remedy(FIX_VFIO_PERMISSIONS)
        }
    } else {
        let container = Path::new("/dev/vfio/vfio");
        let msg = format!("/dev/vfio/{n}: absent until the group is bound to vfio-pci");
        if !host.exists(container) || host.access(container, true) {
            Check::new(
                id,
                PT,
                Status::Ok,
                format!("/dev/vfio/{n} appears when the GPU is bound to vfio-pci"),
            )
            .evidence(msg)
        } else {
            Check::new(
                id,
                PT,
                Status::Fail,
                format!("this user cannot open /dev/vfio/vfio, so not /dev/vfio/{n} either"),
            )
            .evidence(msg)
            .evidence("/dev/vfio/vfio: access(R_OK|W_OK) denied")
            .remedy(FIX_VFIO_PERMISSIONS)
        }
    };
    Some(c.device(a.to_string()))
}
